//! Integers as JSON Schema counts them.
//!
//! Under OpenAPI 3.1 (JSON Schema 2020-12) `2.0` is the integer 2, so a client whose JSON
//! library spells integers that way sends valid data. These deserializers take `2` and
//! `2.0` alike and refuse a fraction, a value out of the type's range, or a float too large
//! to name one integer exactly (beyond 2^53).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// An integer type a JSON number may name.
pub(crate) trait Whole: Sized + TryFrom<i128> {
    /// What the value must be, for error messages.
    const EXPECTING: &'static str;
}

impl Whole for u32 {
    const EXPECTING: &'static str = "an integer from 0 to 4294967295";
}

impl Whole for u64 {
    const EXPECTING: &'static str = "an integer from 0 to 18446744073709551615";
}

impl Whole for i64 {
    const EXPECTING: &'static str = "a 64-bit signed integer";
}

/// Largest magnitude at which every float names exactly one integer.
const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

struct WholeVisitor<T>(PhantomData<T>);

impl<T: Whole> WholeVisitor<T> {
    fn from_i128<E: de::Error>(v: i128, shown: de::Unexpected<'_>) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(shown, &T::EXPECTING))
    }
}

impl<T: Whole> Visitor<'_> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::from_i128(i128::from(v), de::Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::from_i128(i128::from(v), de::Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() <= EXACT {
            // Exact: a whole float no larger than 2^53 converts without rounding.
            #[allow(clippy::cast_possible_truncation)]
            let whole = v as i128;
            Self::from_i128(whole, de::Unexpected::Float(v))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &T::EXPECTING))
        }
    }
}

/// One integer: `2` or `2.0`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: Whole>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WholeVisitor(PhantomData))
}

/// An optional integer: absent, `null`, `2` or `2.0` (with `#[serde(default)]`).
pub(crate) fn deserialize_option<'de, D: Deserializer<'de>, T: Whole>(
    d: D,
) -> Result<Option<T>, D::Error> {
    struct OptionVisitor<T>(PhantomData<T>);
    impl<'de, T: Whole> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(OptionVisitor(PhantomData))
}

/// A JSON array of integers, each `2` or `2.0`.
pub(crate) fn deserialize_vec<'de, D: Deserializer<'de>, T: Whole>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    struct One<T>(T);
    impl<'de, T: Whole> de::Deserialize<'de> for One<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize(d).map(One)
        }
    }
    struct SeqVisitor<T>(PhantomData<T>);
    impl<'de, T: Whole> Visitor<'de> for SeqVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of integers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // Bounded by the request body limit, not by a length the client states.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(One(v)) = seq.next_element::<One<T>>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(SeqVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(deserialize_with = "super::deserialize")]
        n: u32,
        #[serde(deserialize_with = "super::deserialize_vec")]
        ids: Vec<u64>,
    }

    fn parse(json: &str) -> Result<Probe, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_floats_are_integers() {
        let p = parse(r#"{"n": 2.0, "ids": [1, 2.0, 9007199254740992]}"#).unwrap();
        assert_eq!(p.n, 2);
        assert_eq!(p.ids, vec![1, 2, 9_007_199_254_740_992]);
        assert_eq!(
            parse(r#"{"n": 4294967295, "ids": []}"#).unwrap().n,
            u32::MAX
        );
        assert_eq!(
            parse(r#"{"n": 0, "ids": [18446744073709551615]}"#)
                .unwrap()
                .ids,
            vec![u64::MAX]
        );
    }

    #[test]
    fn fractions_ranges_and_inexact_floats_are_refused() {
        for bad in [
            r#"{"n": 2.5, "ids": []}"#,
            r#"{"n": -1, "ids": []}"#,
            r#"{"n": 4294967296, "ids": []}"#,
            r#"{"n": 1e300, "ids": []}"#,
            r#"{"n": "2", "ids": []}"#,
            r#"{"n": 1, "ids": [1.5]}"#,
            r#"{"n": 1, "ids": [-1]}"#,
            r#"{"n": 1, "ids": [18014398509481984.0]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
