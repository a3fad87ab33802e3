//! Port lists as given on the command line (`22,80,8000-8100`) and their
//! rendering into `-m multiport --dports` arguments.
//!
//! The kernel's `multiport` match holds at most 15 port slots per rule, and
//! a range uses two slots, so [`multiport_chunks`] splits long lists into
//! several rules. [`normalize`] sorts, de-duplicates and merges overlapping
//! ranges so the rendered rules are deterministic whatever order the user
//! wrote the ports in.

use std::fmt;
use std::str::FromStr;

/// Maximum number of port slots in one `multiport` match (kernel limit
/// `XT_MULTI_PORTS`). A single port uses one slot, a range two.
pub const MULTIPORT_SLOTS: usize = 15;

/// Why a port list could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortsError {
    /// An empty item, e.g. in `22,,80` or a trailing comma.
    #[error("empty item in port list {list:?}")]
    EmptyItem {
        /// The whole list as given.
        list: String,
    },
    /// An item that is not a number from 1 to 65535.
    #[error("invalid port {item:?}: expected a number from 1 to 65535")]
    InvalidPort {
        /// The offending item.
        item: String,
    },
    /// A range whose first port is above its last.
    #[error("invalid port range {item:?}: the first port is greater than the last")]
    ReversedRange {
        /// The offending item.
        item: String,
    },
}

/// An inclusive range of TCP ports, never containing port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// One port. Returns `None` for port 0.
    pub fn single(port: u16) -> Option<Self> {
        Self::new(port, port)
    }

    /// `first..=last`. Returns `None` for port 0 or `first > last`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first != 0 && first <= last).then_some(Self { first, last })
    }

    /// First port of the range.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// Last port of the range (equal to [`Self::first`] for one port).
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Multiport slots this range uses: 1 for a single port, 2 for a range.
    pub fn slots(&self) -> usize {
        if self.first == self.last {
            1
        } else {
            2
        }
    }
}

/// Renders as iptables writes it: `4191` or `8000:8100`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A list of port ranges as given by the user, in the user's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PortRange>);

/// Parses `22,80,8000-8100`. Whitespace around items is ignored; an empty
/// (or all-whitespace) string is the empty list.
impl FromStr for PortList {
    type Err = PortsError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.trim().is_empty() {
            return Ok(Self::default());
        }
        list.split(',')
            .map(|item| parse_item(list, item.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

fn parse_item(list: &str, item: &str) -> Result<PortRange, PortsError> {
    if item.is_empty() {
        return Err(PortsError::EmptyItem {
            list: list.to_owned(),
        });
    }
    let invalid = || PortsError::InvalidPort {
        item: item.to_owned(),
    };
    let port = |text: &str| -> Result<u16, PortsError> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid()),
            Ok(port) => Ok(port),
        }
    };
    let (first, last) = match item.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let port = port(item)?;
            (port, port)
        }
    };
    PortRange::new(first, last).ok_or_else(|| PortsError::ReversedRange {
        item: item.to_owned(),
    })
}

/// Sorts ranges, drops duplicates and merges overlapping ones. Adjacent
/// ranges (`4190`, `4191`) are kept apart so the rendered rule reads like
/// the user's input.
pub fn normalize(ranges: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut ranges: Vec<PortRange> = ranges.into_iter().collect();
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(previous) if range.first <= previous.last => {
                previous.last = previous.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// Splits ranges into groups that each fit one `multiport` match.
pub fn multiport_chunks(ranges: &[PortRange]) -> Vec<Vec<PortRange>> {
    let mut chunks: Vec<Vec<PortRange>> = Vec::new();
    let mut current: Vec<PortRange> = Vec::new();
    let mut used = 0;
    for range in ranges {
        if used + range.slots() > MULTIPORT_SLOTS {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(*range);
        used += range.slots();
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Renders a chunk as the `--dports` value: `4190,4191,8000:8100`.
pub fn render_dports(chunk: &[PortRange]) -> String {
    chunk
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u16, last: u16) -> PortRange {
        PortRange::new(first, last).expect("valid range in test")
    }

    #[test]
    fn parse_table() {
        let ok: &[(&str, &[(u16, u16)])] = &[
            ("", &[]),
            ("   ", &[]),
            ("22", &[(22, 22)]),
            ("22,80", &[(22, 22), (80, 80)]),
            (" 22 , 80 ", &[(22, 22), (80, 80)]),
            ("8000-8100", &[(8000, 8100)]),
            ("8000 - 8100", &[(8000, 8100)]),
            ("1-65535", &[(1, 65535)]),
            ("5-5", &[(5, 5)]),
            ("80,22,80", &[(80, 80), (22, 22), (80, 80)]),
        ];
        for (input, want) in ok {
            let want: Vec<PortRange> = want.iter().map(|&(a, b)| r(a, b)).collect();
            assert_eq!(input.parse::<PortList>(), Ok(PortList(want)), "{input:?}");
        }
        let bad: &[(&str, PortsError)] = &[
            (
                "22,,80",
                PortsError::EmptyItem {
                    list: "22,,80".into(),
                },
            ),
            ("22,", PortsError::EmptyItem { list: "22,".into() }),
            ("0", PortsError::InvalidPort { item: "0".into() }),
            (
                "65536",
                PortsError::InvalidPort {
                    item: "65536".into(),
                },
            ),
            ("-1", PortsError::InvalidPort { item: "-1".into() }),
            ("+5", PortsError::InvalidPort { item: "+5".into() }),
            (
                "http",
                PortsError::InvalidPort {
                    item: "http".into(),
                },
            ),
            ("1-", PortsError::InvalidPort { item: "1-".into() }),
            (
                "1-2-3",
                PortsError::InvalidPort {
                    item: "1-2-3".into(),
                },
            ),
            (
                "8000:8100",
                PortsError::InvalidPort {
                    item: "8000:8100".into(),
                },
            ),
            (
                "100-10",
                PortsError::ReversedRange {
                    item: "100-10".into(),
                },
            ),
        ];
        for (input, want) in bad {
            assert_eq!(input.parse::<PortList>().as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn range_constructors() {
        assert_eq!(PortRange::single(0), None);
        assert_eq!(PortRange::new(10, 9), None);
        assert_eq!(PortRange::new(0, 9), None);
        let range = r(10, 12);
        assert!(range.contains(10) && range.contains(12) && !range.contains(13));
        assert_eq!((range.first(), range.last(), range.slots()), (10, 12, 2));
        assert_eq!(r(7, 7).slots(), 1);
        assert_eq!(r(7, 7).to_string(), "7");
        assert_eq!(r(7, 9).to_string(), "7:9");
    }

    /// Ranges as `(first, last)` pairs.
    type Pairs = &'static [(u16, u16)];

    #[test]
    fn normalize_table() {
        let cases: &[(Pairs, Pairs)] = &[
            (&[], &[]),
            (&[(4191, 4191), (4190, 4190)], &[(4190, 4190), (4191, 4191)]),
            (&[(80, 80), (80, 80)], &[(80, 80)]),
            (&[(8000, 8100), (8050, 8200)], &[(8000, 8200)]),
            (&[(8000, 8100), (8080, 8080)], &[(8000, 8100)]),
            (&[(8000, 8100), (8100, 8100)], &[(8000, 8100)]),
            (&[(8000, 8100), (8101, 8101)], &[(8000, 8100), (8101, 8101)]),
            (&[(1, 65535), (22, 22)], &[(1, 65535)]),
        ];
        for (input, want) in cases {
            let got = normalize(input.iter().map(|&(a, b)| r(a, b)));
            let want: Vec<PortRange> = want.iter().map(|&(a, b)| r(a, b)).collect();
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn multiport_chunk_table() {
        let singles = |n: u16| (1..=n).map(|p| r(p, p)).collect::<Vec<_>>();
        let sizes = |chunks: Vec<Vec<PortRange>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(multiport_chunks(&[])), Vec::<usize>::new());
        assert_eq!(sizes(multiport_chunks(&singles(15))), vec![15]);
        assert_eq!(sizes(multiport_chunks(&singles(16))), vec![15, 1]);
        assert_eq!(sizes(multiport_chunks(&singles(31))), vec![15, 15, 1]);
        // Seven ranges use 14 slots; an eighth range (2 slots) starts a new chunk.
        let ranges: Vec<PortRange> = (0..8).map(|i| r(100 * i + 100, 100 * i + 150)).collect();
        assert_eq!(sizes(multiport_chunks(&ranges)), vec![7, 1]);
        // Seven ranges plus one single port fill exactly 15 slots.
        let mut mixed = ranges[..7].to_vec();
        mixed.push(r(9999, 9999));
        assert_eq!(sizes(multiport_chunks(&mixed)), vec![8]);
    }

    #[test]
    fn render_dports_joins() {
        assert_eq!(
            render_dports(&[r(4190, 4190), r(4191, 4191), r(8000, 8100)]),
            "4190,4191,8000:8100"
        );
    }
}
