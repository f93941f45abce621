//! Tag constraints and their syntax.
//!
//! In a job file, `[constraints]` maps a node tag key to one of:
//!
//! | TOML                         | JSON                          | matches a node whose tag |
//! |------------------------------|-------------------------------|--------------------------|
//! | `zone = "a"`                 | `"zone": "a"`                 | is `a`                   |
//! | `zone = "!a"`                | `"zone": "!a"`                | is absent or not `a`     |
//! | `zone = ["a", "b"]`          | `"zone": ["a", "b"]`          | is `a` or `b`            |
//! | `zone = { not = "a" }`       | `"zone": {"not": "a"}`        | is absent or not `a`     |
//! | `zone = { eq = "!a" }`       | `"zone": {"eq": "!a"}`        | is `!a` (a literal `!`)  |
//! | `zone = { not_in = ["a"] }`  | `"zone": {"not_in": ["a"]}`   | is absent or not listed  |
//!
//! The table forms `{ eq }`, `{ not }`, `{ in }` and `{ not_in }` are the
//! long spelling of each; a table holds exactly one of them.
//!
//! Human-readable formats (TOML, JSON) use this syntax; postcard (the
//! replicated record) uses a plain tagged enum, because postcard cannot
//! read a value without knowing its shape first.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a node's tag must be for the node to be eligible.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Constraint {
    /// The tag is present and equal.
    Eq(String),
    /// The tag is absent or different.
    Ne(String),
    /// The tag is present and one of these.
    In(BTreeSet<String>),
    /// The tag is absent or none of these.
    NotIn(BTreeSet<String>),
}

impl Constraint {
    /// Whether a node whose tag has this value (`None`: no such tag) matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Constraint::Eq(want), Some(v)) => want == v,
            (Constraint::In(set), Some(v)) => set.contains(v),
            (Constraint::Eq(_) | Constraint::In(_), None) => false,
            (Constraint::Ne(no), v) => v != Some(no.as_str()),
            (Constraint::NotIn(set), v) => v.is_none_or(|v| !set.contains(v)),
        }
    }

    /// The constraint on tag `key` in words, as `plan` shows it: `zone=a`,
    /// `zone!=a`, `zone in {a,b}`, `zone not in {a,b}`.
    pub fn describe(&self, key: &str) -> String {
        let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
        match self {
            Constraint::Eq(v) => format!("{key}={v}"),
            Constraint::Ne(v) => format!("{key}!={v}"),
            Constraint::In(s) => format!("{key} in {{{}}}", set(s)),
            Constraint::NotIn(s) => format!("{key} not in {{{}}}", set(s)),
        }
    }

    /// Every value the constraint names, for validation.
    pub(crate) fn values(&self) -> Vec<&String> {
        match self {
            Constraint::Eq(v) | Constraint::Ne(v) => vec![v],
            Constraint::In(s) | Constraint::NotIn(s) => s.iter().collect(),
        }
    }
}

/// The compact form in postcard records.
#[derive(Serialize, Deserialize)]
enum Wire {
    Eq(String),
    Ne(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            let wire = match self.clone() {
                Constraint::Eq(v) => Wire::Eq(v),
                Constraint::Ne(v) => Wire::Ne(v),
                Constraint::In(v) => Wire::In(v),
                Constraint::NotIn(v) => Wire::NotIn(v),
            };
            return wire.serialize(s);
        }
        match self {
            Constraint::Eq(v) if !v.starts_with('!') => s.serialize_str(v),
            Constraint::Ne(v) if !v.starts_with('!') => s.serialize_str(&format!("!{v}")),
            Constraint::In(set) => set.serialize(s),
            other => {
                let (key, value): (&str, Vec<&String>) = match other {
                    Constraint::Eq(v) => ("eq", vec![v]),
                    Constraint::Ne(v) => ("not", vec![v]),
                    Constraint::NotIn(set) => ("not_in", set.iter().collect()),
                    Constraint::In(_) => unreachable!("handled above"),
                };
                let mut map = s.serialize_map(Some(1))?;
                if key == "not_in" {
                    map.serialize_entry(key, &value)?;
                } else {
                    map.serialize_entry(key, value[0])?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(match Wire::deserialize(d)? {
                Wire::Eq(v) => Constraint::Eq(v),
                Wire::Ne(v) => Constraint::Ne(v),
                Wire::In(v) => Constraint::In(v),
                Wire::NotIn(v) => Constraint::NotIn(v),
            });
        }
        d.deserialize_any(ConstraintVisitor)
    }
}

struct ConstraintVisitor;

impl<'de> Visitor<'de> for ConstraintVisitor {
    type Value = Constraint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            r#"a tag value ("a"), its negation ("!a"), a list (["a", "b"]) or one of { eq, not, in, not_in }"#,
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Constraint, E> {
        Ok(match v.strip_prefix('!') {
            Some(rest) => Constraint::Ne(rest.to_string()),
            None => Constraint::Eq(v.to_string()),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Constraint, A::Error> {
        let mut set = BTreeSet::new();
        while let Some(v) = seq.next_element::<String>()? {
            set.insert(v);
        }
        Ok(Constraint::In(set))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Constraint, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(
                "an empty table; give one of eq, not, in, not_in",
            ));
        };
        let out = match key.as_str() {
            "eq" => Constraint::Eq(map.next_value()?),
            "not" => Constraint::Ne(map.next_value()?),
            "in" => Constraint::In(map.next_value()?),
            "not_in" => Constraint::NotIn(map.next_value()?),
            other => {
                return Err(de::Error::unknown_field(
                    other,
                    &["eq", "not", "in", "not_in"],
                ));
            }
        };
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(
                "a constraint table holds exactly one of eq, not, in, not_in",
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn matching_follows_the_table_in_the_docs() {
        assert!(Constraint::Eq("a".into()).matches(Some("a")));
        assert!(!Constraint::Eq("a".into()).matches(Some("b")));
        assert!(!Constraint::Eq("a".into()).matches(None));
        assert!(Constraint::Ne("a".into()).matches(None));
        assert!(!Constraint::Ne("a".into()).matches(Some("a")));
        assert!(Constraint::In(set(&["a", "b"])).matches(Some("b")));
        assert!(!Constraint::In(set(&["a", "b"])).matches(None));
        assert!(Constraint::NotIn(set(&["a"])).matches(None));
        assert!(!Constraint::NotIn(set(&["a"])).matches(Some("a")));
    }

    #[test]
    fn every_form_round_trips_through_json_and_postcard() {
        for c in [
            Constraint::Eq("a".into()),
            Constraint::Eq("!odd".into()),
            Constraint::Ne("a".into()),
            Constraint::Ne("!odd".into()),
            Constraint::In(set(&["a", "b"])),
            Constraint::NotIn(set(&["a", "b"])),
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(
                serde_json::from_str::<Constraint>(&json).unwrap(),
                c,
                "{json}"
            );
            let bin = postcard::to_stdvec(&c).unwrap();
            assert_eq!(postcard::from_bytes::<Constraint>(&bin).unwrap(), c);
        }
        assert_eq!(
            serde_json::to_string(&Constraint::Ne("a".into())).unwrap(),
            r#""!a""#
        );
    }

    #[test]
    fn tables_hold_exactly_one_known_key() {
        let parse = |s: &str| serde_json::from_str::<Constraint>(s);
        assert_eq!(
            parse(r#"{"not": "a"}"#).unwrap(),
            Constraint::Ne("a".into())
        );
        assert!(
            parse(r#"{"like": "a"}"#)
                .unwrap_err()
                .to_string()
                .contains("like")
        );
        assert!(parse(r#"{}"#).is_err());
        assert!(parse(r#"{"eq": "a", "not": "b"}"#).is_err());
        assert!(parse("3").is_err());
    }
}
