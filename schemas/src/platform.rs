//! The platforms events come from, as the tracking plan names them.

use serde::Deserialize;

/// Where an event was tracked. The discriminants are stable: the scorer
/// keeps a lead's platforms as bits in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    App = 0,
    MiniProgram = 1,
    Web = 2,
    Server = 3,
    Offline = 4,
}

impl Platform {
    /// Every platform, in discriminant order.
    pub const ALL: [Platform; 5] = [
        Platform::App,
        Platform::MiniProgram,
        Platform::Web,
        Platform::Server,
        Platform::Offline,
    ];

    /// The tracking plan's name for the platform.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::App => "app",
            Platform::MiniProgram => "mini_program",
            Platform::Web => "web",
            Platform::Server => "server",
            Platform::Offline => "offline",
        }
    }

    /// The platform the tracking plan names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub fn from_index(i: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(i).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_the_serde_names() {
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.as_str()), Some(p));
            assert_eq!(Platform::from_index(p as u32), Some(p));
            let quoted = format!("\"{}\"", p.as_str());
            assert_eq!(serde_json::from_str::<Platform>(&quoted).unwrap(), p);
        }
        assert_eq!(Platform::parse("fax"), None);
    }
}
