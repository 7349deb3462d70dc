//! The room log: the last messages of the first rooms that had any, as `log` prints them.

use core::fmt::{self, Write};

use heapless::{Deque, String, Vec};

use crate::matrix::{EscapedBody, UiEvent};

/// The last `LINES` messages of each of the first `ROOMS` rooms, each line (and each room id)
/// at most `LINE_BYTES` bytes: longer ones are cut at a character boundary. A platform's
/// [`Ui`](crate::matrix::Ui) gives it every event ([`RoomLog::on_event`]); `log` prints it.
#[derive(Debug)]
pub struct RoomLog<const ROOMS: usize, const LINES: usize, const LINE_BYTES: usize> {
    rooms: Vec<Room<LINES, LINE_BYTES>, ROOMS>,
}

#[derive(Debug)]
struct Room<const LINES: usize, const LINE_BYTES: usize> {
    id: String<LINE_BYTES>,
    lines: Deque<String<LINE_BYTES>, LINES>,
}

impl<const ROOMS: usize, const LINES: usize, const LINE_BYTES: usize>
    RoomLog<ROOMS, LINES, LINE_BYTES>
{
    /// An empty log (const, so that a device can keep it in a static).
    pub const fn new() -> Self {
        RoomLog { rooms: Vec::new() }
    }

    /// Keeps the line of a [`UiEvent::Message`] and of a [`UiEvent::FileReceived`] (`file
    /// <name> (<size> B)`); other events leave the log as it is.
    pub fn on_event(&mut self, event: &UiEvent<'_>) {
        match event {
            UiEvent::Message {
                room_id,
                sender,
                body,
                ..
            } => self.remember(room_id, sender, body),
            UiEvent::FileReceived {
                room_id,
                sender,
                size,
                name,
                ..
            } => {
                let mut line: String<LINE_BYTES> = String::new();
                let _ = write!(Cut(&mut line), "file {name} ({size} B)");
                self.remember(room_id, sender, &line);
            }
            _ => {}
        }
    }

    pub(super) fn remember(&mut self, room_id: &str, sender: &str, body: &str) {
        let mut id = String::new();
        let _ = Cut(&mut id).write_str(room_id);
        let index = match self.rooms.iter().position(|room| room.id == id) {
            Some(index) => index,
            None => {
                let room = Room {
                    id,
                    lines: Deque::new(),
                };
                if self.rooms.push(room).is_err() {
                    // The first rooms keep their place; later ones are not logged.
                    return;
                }
                self.rooms.len() - 1
            }
        };
        let Some(room) = self.rooms.get_mut(index) else {
            return;
        };
        if room.lines.is_full() {
            room.lines.pop_front();
        }
        let mut line = String::new();
        let _ = write!(Cut(&mut line), "{sender}: {}", EscapedBody(body));
        let _ = room.lines.push_back(line);
    }

    /// `log [room]`: `log <room> <sender>: <body>` lines, oldest first, of one room or all.
    pub fn write(&self, room: Option<&str>, out: &mut dyn Write) -> fmt::Result {
        for logged in &self.rooms {
            if room.is_none_or(|room| room == logged.id.as_str()) {
                for line in &logged.lines {
                    writeln!(out, "log {} {line}", logged.id)?;
                }
            }
        }
        Ok(())
    }
}

impl<const ROOMS: usize, const LINES: usize, const LINE_BYTES: usize> Default
    for RoomLog<ROOMS, LINES, LINE_BYTES>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Writes into a bounded string, cutting at the last character that fits.
pub(super) struct Cut<'a, const N: usize>(pub(super) &'a mut String<N>);

impl<const N: usize> Write for Cut<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            self.0.push(c).map_err(|_| fmt::Error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(room_id: &'a str, body: &'a str) -> UiEvent<'a> {
        UiEvent::Message {
            room_id,
            sender: "@bob:s",
            event_id: "$e",
            body,
            encrypted: true,
            sender_verified: false,
        }
    }

    fn shown<const R: usize, const L: usize, const B: usize>(
        log: &RoomLog<R, L, B>,
        room: Option<&str>,
    ) -> std::string::String {
        let mut out = std::string::String::new();
        log.write(room, &mut out).unwrap();
        out
    }

    #[test]
    fn log_shows_a_received_file_with_its_name_and_size() {
        let mut log: RoomLog<1, 2, 64> = RoomLog::new();
        log.on_event(&UiEvent::FileReceived {
            room_id: "!a:s",
            sender: "@bob:s",
            size: 1234,
            mimetype: "image/png",
            name: "cat.png",
        });
        assert_eq!(
            shown(&log, None),
            "log !a:s @bob:s: file cat.png (1234 B)\n"
        );
    }

    #[test]
    fn log_keeps_the_last_lines_of_each_room_escaped_onto_one_line() {
        let mut log: RoomLog<2, 2, 64> = RoomLog::new();
        for body in ["one", "two", "three\nlines"] {
            log.on_event(&message("!a:s", body));
        }
        log.on_event(&message("!b:s", "hi"));
        assert_eq!(
            shown(&log, None),
            "log !a:s @bob:s: two\nlog !a:s @bob:s: three\\nlines\nlog !b:s @bob:s: hi\n"
        );
        assert_eq!(shown(&log, Some("!b:s")), "log !b:s @bob:s: hi\n");
    }

    #[test]
    fn log_cuts_long_lines_at_a_character_and_keeps_only_the_first_rooms() {
        let mut log: RoomLog<1, 4, 12> = RoomLog::new();
        log.on_event(&message("!a:s", "ééééé"));
        log.on_event(&message("!b:s", "elsewhere"));
        // "@bob:s: " is 8 bytes; two 2-byte characters fit in the 4 left.
        assert_eq!(shown(&log, None), "log !a:s @bob:s: éé\n");
    }
}
