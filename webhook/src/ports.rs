//! Port lists for `OTEL_EBPF_OPEN_PORT`: `80,8080` or ranges such as `8000-8099`.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// An inclusive range of TCP ports; a single port has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// A non-empty, sorted, de-duplicated list of port ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec(Vec<PortRange>);

impl PortSpec {
    /// The TCP ports of a set of containers; `None` when there are none.
    pub fn from_ports(ports: impl IntoIterator<Item = u16>) -> Option<Self> {
        Self::from_ranges(
            ports
                .into_iter()
                .map(|port| PortRange {
                    start: port,
                    end: port,
                })
                .collect(),
        )
    }

    fn from_ranges(mut ranges: Vec<PortRange>) -> Option<Self> {
        ranges.sort_unstable();
        ranges.dedup();
        (!ranges.is_empty()).then_some(Self(ranges))
    }
}

impl FromStr for PortSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ranges = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let (start, end) = item.split_once('-').unwrap_or((item, item));
                let start = parse_port(start).ok_or_else(|| not_a_port(item))?;
                let end = parse_port(end).ok_or_else(|| not_a_port(item))?;
                if end < start {
                    return Err(Error::PortList(format!(
                        "range {item:?} ends before it starts"
                    )));
                }
                Ok(PortRange { start, end })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_ranges(ranges).ok_or_else(|| Error::PortList("empty port list".to_owned()))
    }
}

fn not_a_port(item: &str) -> Error {
    Error::PortList(format!(
        "{item:?} is not a port (1-65535) or a range like 8000-8099"
    ))
}

/// A decimal port number 1-65535, digits only (no sign, no spaces inside).
fn parse_port(text: &str) -> Option<u16> {
    let text = text.trim();
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|port| *port != 0)
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            range.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let cases = [
            ("80", "80"),
            ("8080,80", "80,8080"),
            (" 80 , 8000-8099 ", "80,8000-8099"),
            ("443,443,80,", "80,443"),
            ("1-65535", "1-65535"),
            ("9000-9000", "9000"),
        ];
        for (input, expected) in cases {
            let spec: PortSpec = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(spec.to_string(), expected, "{input}");
        }
    }

    #[test]
    fn rejects_invalid_values() {
        let message = |text: &str| text.parse::<PortSpec>().map_err(|e| e.to_string());
        assert_eq!(message(""), Err("empty port list".to_owned()));
        assert_eq!(message(" , "), Err("empty port list".to_owned()));
        for bad in [
            "0",
            "65536",
            "http",
            "-80",
            "80-",
            "+80",
            "1-2-3",
            "8 0",
            "99999999999",
        ] {
            let expected = format!("{bad:?} is not a port (1-65535) or a range like 8000-8099");
            assert_eq!(message(bad), Err(expected), "{bad}");
        }
        assert_eq!(
            message("90-80"),
            Err("range \"90-80\" ends before it starts".to_owned())
        );
    }

    #[test]
    fn collects_container_ports() {
        assert_eq!(PortSpec::from_ports([]), None);
        let spec = PortSpec::from_ports([8080, 80, 8080]);
        assert_eq!(spec.map(|s| s.to_string()).as_deref(), Some("80,8080"));
    }
}
