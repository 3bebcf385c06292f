//! `--proxy-video-encoders=auto|none|nvenc,x264,...` (xpra's option name):
//! which encoders the workers use, in order of preference.

use std::fmt;
use std::str::FromStr;

/// An encoder kind the option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    /// NVIDIA's hardware encoder: one worker per device that has it.
    Nvenc,
    /// libx264 on CPU workers.
    X264,
}

impl EncoderKind {
    pub fn name(self) -> &'static str {
        match self {
            EncoderKind::Nvenc => "nvenc",
            EncoderKind::X264 => "x264",
        }
    }
}

/// The option's value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EncoderChoice {
    /// No transcoding: every connection is relayed as it is (the default).
    #[default]
    None,
    /// Every NVENC device found, else (and besides, for contexts over a
    /// device's limit) the CPU.
    Auto,
    /// These, in this order (no duplicates).
    List(Vec<EncoderKind>),
}

impl EncoderChoice {
    pub fn is_enabled(&self) -> bool {
        !matches!(self, EncoderChoice::None)
    }

    /// The kinds to try, in order.
    pub fn kinds(&self) -> Vec<EncoderKind> {
        match self {
            EncoderChoice::None => Vec::new(),
            EncoderChoice::Auto => vec![EncoderKind::Nvenc, EncoderKind::X264],
            EncoderChoice::List(l) => l.clone(),
        }
    }
}

/// A value the option does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChoiceError {
    #[error("unknown video encoder {0:?} (known: auto, none, nvenc, x264)")]
    Unknown(String),
    #[error("video encoder {0:?} named twice")]
    Duplicate(String),
    #[error("{0:?} cannot be combined with other encoders")]
    Alone(String),
    #[error("no video encoder named")]
    Empty,
}

impl FromStr for EncoderChoice {
    type Err = ChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err(ChoiceError::Empty);
        }
        let mut kinds = Vec::new();
        for n in &names {
            let lower = n.to_ascii_lowercase();
            let kind = match lower.as_str() {
                "auto" | "none" | "off" | "no" if names.len() > 1 => {
                    return Err(ChoiceError::Alone((*n).to_owned()))
                }
                "auto" | "all" => return Ok(EncoderChoice::Auto),
                "none" | "off" | "no" => return Ok(EncoderChoice::None),
                "nvenc" => EncoderKind::Nvenc,
                "x264" | "enc_x264" => EncoderKind::X264,
                _ => return Err(ChoiceError::Unknown((*n).to_owned())),
            };
            if kinds.contains(&kind) {
                return Err(ChoiceError::Duplicate((*n).to_owned()));
            }
            kinds.push(kind);
        }
        Ok(EncoderChoice::List(kinds))
    }
}

impl fmt::Display for EncoderChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncoderChoice::None => f.write_str("none"),
            EncoderChoice::Auto => f.write_str("auto"),
            EncoderChoice::List(l) => {
                let names: Vec<&str> = l.iter().map(|k| k.name()).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_xpra_takes() {
        assert_eq!("auto".parse(), Ok(EncoderChoice::Auto));
        assert_eq!("none".parse(), Ok(EncoderChoice::None));
        assert_eq!(
            "nvenc, x264".parse(),
            Ok(EncoderChoice::List(vec![
                EncoderKind::Nvenc,
                EncoderKind::X264
            ]))
        );
        assert_eq!("x264".parse::<EncoderChoice>().unwrap().to_string(), "x264");
        assert_eq!(
            "vaapi".parse::<EncoderChoice>(),
            Err(ChoiceError::Unknown("vaapi".into()))
        );
        assert_eq!(
            "x264,x264".parse::<EncoderChoice>(),
            Err(ChoiceError::Duplicate("x264".into()))
        );
        assert_eq!(
            "auto,x264".parse::<EncoderChoice>(),
            Err(ChoiceError::Alone("auto".into()))
        );
        assert_eq!("".parse::<EncoderChoice>(), Err(ChoiceError::Empty));
        assert!(!EncoderChoice::default().is_enabled());
        assert_eq!(
            EncoderChoice::Auto.kinds(),
            vec![EncoderKind::Nvenc, EncoderKind::X264]
        );
    }
}
