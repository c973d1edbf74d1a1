//! JSON text to `serde_json::Value`, exactly as written. The workspace builds serde_json with
//! `raw_value` (the gateway passes values through as `RawValue`), and with that feature
//! `Value`'s own parser reads an object whose key is `$serde_json::private::RawValue` as the
//! JSON inside its string: `{"$serde_json::private::RawValue":"1"}` would become `1`. A value
//! checked against a schema in that form would not be the value stored, so schemas and the
//! values they check are parsed here instead.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `text` as one JSON document into the `Value` it spells, key for key.
pub fn parse_value(text: &str) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Exact.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Builds a `Value` from whatever the deserializer reads, with no key treated specially.
struct Exact;

impl<'de> DeserializeSeed<'de> for Exact {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Exact {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::with_capacity(items.size_hint().unwrap_or(0));
        while let Some(item) = items.next_element_seed(Exact)? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = fields.next_key::<String>()? {
            let value = fields.next_value_seed(Exact)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_raw_value_key_is_an_ordinary_key() {
        let text = r#"{"$serde_json::private::RawValue":"{\"title\":1}"}"#;
        assert_eq!(
            parse_value(text).unwrap(),
            json!({"$serde_json::private::RawValue": "{\"title\":1}"})
        );
        // What `Value`'s own parser makes of it under the workspace's features.
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap(),
            json!({"title": 1})
        );
    }

    #[test]
    fn documents_parse_as_serde_json_parses_them() {
        for text in [
            "null",
            "true",
            "-12",
            "18446744073709551615",
            "1.5e300",
            r#""a\u00e9\n""#,
            r#"{"a":[1,{"b":null}],"a":2,"c":{}}"#,
            " [ ] ",
        ] {
            assert_eq!(
                parse_value(text).unwrap(),
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_or_trailing_text_is_refused() {
        for text in ["", "{", "[1,]", "1 2", r#"{"a":1}x"#, "NaN", "1e999"] {
            assert!(parse_value(text).is_err(), "{text}");
        }
    }
}
