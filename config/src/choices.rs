//! The words `[limits]` accepts for its modes and its block action, parsed into enums when the
//! file is read, so nothing after load handles the strings.
//!
//! These are the config's own enums: the proxy maps them onto the limiter's `Mode` and its own
//! block action, so this crate depends on neither.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer};

/// `limits.mode`: the mode at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// `"disabled"`: nothing is scored (the static guards still act).
    Disabled,
    /// `"training"`: learn the clients' maxima.
    Training,
    /// `"defence"` (or `"defense"`): score and block.
    Defence,
    /// `"monitor"`: score and count would-blocks, enforce nothing.
    Monitor,
}

impl FromStr for StartMode {
    type Err = UnknownChoice;

    fn from_str(s: &str) -> Result<Self, UnknownChoice> {
        match s {
            "disabled" => Ok(StartMode::Disabled),
            "training" => Ok(StartMode::Training),
            "defence" | "defense" => Ok(StartMode::Defence),
            "monitor" => Ok(StartMode::Monitor),
            _ => Err(UnknownChoice {
                key: "limits.mode",
                what: "mode",
                value: s.to_owned(),
                expected: "disabled, training, defence or monitor",
            }),
        }
    }
}

/// `limits.after_training`: the mode training ends into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTraining {
    /// `"defence"` (or `"defense"`).
    Defence,
    /// `"monitor"`.
    Monitor,
}

impl FromStr for AfterTraining {
    type Err = UnknownChoice;

    fn from_str(s: &str) -> Result<Self, UnknownChoice> {
        match s {
            "defence" | "defense" => Ok(AfterTraining::Defence),
            "monitor" => Ok(AfterTraining::Monitor),
            _ => Err(UnknownChoice {
                key: "limits.after_training",
                what: "mode",
                value: s.to_owned(),
                expected: "defence or monitor",
            }),
        }
    }
}

/// `limits.block_action`: what a block does to a connection with a request in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockActionKind {
    /// `"reset"`: TCP RST, or GOAWAY and close for HTTP/2.
    Reset,
    /// `"reply"`: a `limits.block_status` response first.
    Reply,
}

impl FromStr for BlockActionKind {
    type Err = UnknownChoice;

    fn from_str(s: &str) -> Result<Self, UnknownChoice> {
        match s {
            "reset" => Ok(BlockActionKind::Reset),
            "reply" => Ok(BlockActionKind::Reply),
            _ => Err(UnknownChoice {
                key: "limits.block_action",
                what: "action",
                value: s.to_owned(),
                expected: "\"reset\" or \"reply\"",
            }),
        }
    }
}

/// A word that is not one of its key's choices. `Display` names the key as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChoice {
    /// The key, e.g. `limits.mode`.
    pub key: &'static str,
    /// What the key chooses, e.g. `mode`.
    pub what: &'static str,
    /// The word given.
    pub value: String,
    /// The words accepted, e.g. `defence or monitor`.
    pub expected: &'static str,
}

impl fmt::Display for UnknownChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}`: unknown {} {:?}: use {}",
            self.key, self.what, self.value, self.expected
        )
    }
}

impl std::error::Error for UnknownChoice {}

/// Deserializes a string through `T`'s `FromStr`.
fn from_word<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = UnknownChoice>,
{
    let word = String::deserialize(d)?;
    word.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for StartMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_word(d)
    }
}

impl<'de> Deserialize<'de> for AfterTraining {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_word(d)
    }
}

impl<'de> Deserialize<'de> for BlockActionKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_word(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_parse_and_unknown_ones_name_the_key() {
        assert_eq!("defense".parse(), Ok(StartMode::Defence));
        assert_eq!("monitor".parse(), Ok(AfterTraining::Monitor));
        assert_eq!("reply".parse(), Ok(BlockActionKind::Reply));
        let e = "offence".parse::<StartMode>().unwrap_err().to_string();
        assert!(
            e.contains("`limits.mode`") && e.contains("\"offence\""),
            "{e}"
        );
        let e = "training".parse::<AfterTraining>().unwrap_err().to_string();
        assert!(e.contains("limits.after_training"), "{e}");
        let e = "explode"
            .parse::<BlockActionKind>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.block_action"), "{e}");
    }
}
