//! The token's physical user interface: LED0 as the activity indicator and BTN0 as the
//! confirm button, through riot-wrappers' LED and GPIO (embedded-hal's `InputPin`).
//!
//! jeton-core's `Ui` trait does not exist yet; until it does, the indicator is lit while
//! `keys` creates and stores a new identity (a long flash operation), and `status` shows the
//! button's state.

use embedded_hal::digital::InputPin;
use riot_wrappers::gpio::{GPIO, InputGPIO, InputMode};
use riot_wrappers::led::LED;
use switch_hal::OutputSwitch;

// SAFETY: the declaration matches jeton_platform.c; it writes one gpio_t through the pointer.
#[allow(unsafe_code)]
unsafe extern "C" {
    fn jeton_button_pin(pin: *mut riot_sys::gpio_t) -> i32;
}

/// LED0 and BTN0, as far as the board has them.
pub(crate) struct Panel {
    indicator: Option<LED<0>>,
    button: Option<InputGPIO>,
}

impl core::fmt::Debug for Panel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Panel")
            .field("indicator", &self.indicator.is_some())
            .field("button", &self.button.is_some())
            .finish()
    }
}

/// The state of the confirm button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ButtonState {
    Absent,
    Released,
    Pressed,
}

impl Panel {
    /// Finds LED0 and configures BTN0 (pull-up, pressed pulls it low, as on every supported
    /// board).
    #[allow(unsafe_code)]
    pub(crate) fn open() -> Self {
        let mut pin = riot_sys::gpio_t::default();
        // SAFETY: `pin` is a live local the C side only writes.
        let button = if unsafe { jeton_button_pin(&mut pin) } == 0 {
            GPIO::from_c(pin).and_then(|gpio| gpio.configure_as_input(InputMode::InPullUp).ok())
        } else {
            None
        };
        Self {
            indicator: LED::<0>::new_checked().ok(),
            button,
        }
    }

    /// Lights or clears the activity indicator (a no-op without LED0).
    pub(crate) fn indicate(&mut self, busy: bool) {
        if let Some(led) = self.indicator.as_mut() {
            let _ = if busy { led.on() } else { led.off() };
        }
    }

    pub(crate) fn has_indicator(&self) -> bool {
        self.indicator.is_some()
    }

    pub(crate) fn button(&mut self) -> ButtonState {
        match self.button.as_mut().map(InputPin::is_low) {
            None => ButtonState::Absent,
            Some(Ok(true)) => ButtonState::Pressed,
            Some(Ok(false) | Err(_)) => ButtonState::Released,
        }
    }
}
