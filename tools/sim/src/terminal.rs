//! The person's side of jeton-sim: the lines they type, and the lines the shell prints.
//!
//! On a terminal a line is edited with a prompt, the arrow keys and the history of the
//! session (`rustyline`); what the token prints meanwhile goes above the line being typed,
//! which stays whole. Without a terminal (a script, a pipe) lines are read as they come and
//! printed as they are, one per line. The history stays in memory: a `login` or an `xsign`
//! with its password is never kept in it.

use std::io::BufRead;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};

use rustyline::ExternalPrinter;

/// The prompt of the interactive shell.
const PROMPT: &str = "jeton> ";

/// Where printed lines go while a person edits a line at a terminal.
static ABOVE_PROMPT: OnceLock<Mutex<Box<dyn ExternalPrinter + Send>>> = OnceLock::new();

/// The lines typed or piped in, read on a thread of their own; the channel ends with the
/// input (Ctrl-D, Ctrl-C on a terminal).
pub(crate) fn lines(interactive: bool) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if interactive && let Some(editor) = editor() {
        std::thread::spawn(move || edit_lines(editor, &tx));
        return rx;
    }
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A line editor whose printer is in place, or `None` where the terminal does not allow one
/// (the shell then reads plain lines).
fn editor() -> Option<rustyline::DefaultEditor> {
    let mut editor = rustyline::DefaultEditor::new().ok()?;
    let printer = editor.create_external_printer().ok()?;
    ABOVE_PROMPT.set(Mutex::new(Box::new(printer))).ok()?;
    Some(editor)
}

fn edit_lines(mut editor: rustyline::DefaultEditor, tx: &mpsc::Sender<String>) {
    while let Ok(line) = editor.readline(PROMPT) {
        if !line.trim().is_empty() && !carries_password(&line) {
            let _ = editor.add_history_entry(line.as_str());
        }
        if tx.send(line).is_err() {
            break;
        }
    }
}

/// Whether `line` is a `login` or an `xsign` with its password.
fn carries_password(line: &str) -> bool {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("login") => words.nth(1).is_some(),
        Some("xsign") => words.next().is_some(),
        _ => false,
    }
}

/// Prints `text` (whole lines, each ending in a newline): above the prompt while a person
/// edits a line, else to stdout.
pub(crate) fn say(text: &str) {
    if let Some(printer) = ABOVE_PROMPT.get() {
        let mut printer = printer.lock().unwrap_or_else(|e| e.into_inner());
        let lines = text.strip_suffix('\n').unwrap_or(text);
        if printer.print(lines.to_string()).is_err() {
            print!("{text}");
        }
    } else {
        print!("{text}");
    }
}

/// Prints one line ([`say`]).
pub(crate) fn say_line(line: &str) {
    say(&format!("{line}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_with_its_password_stays_out_of_the_history() {
        assert!(carries_password("login alice secret"));
        assert!(carries_password("  login @alice:example.org s3cr3t  "));
        assert!(!carries_password("login"));
        assert!(!carries_password("login alice"));
        assert!(!carries_password("send 1 login alice secret"));
        assert!(carries_password("xsign secret"));
        assert!(!carries_password("xsign"));
    }
}
