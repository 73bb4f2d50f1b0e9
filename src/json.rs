//! JSON helpers shared by the token, proof and introspection parsers (serde_json
//! does the parsing; this module only narrows what is accepted).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// Deserializes a JSON *object* into `T`. Derived structs would also accept a
/// JSON array (`["https://a", ...]` as positional fields); a JOSE header or a
/// claims set is only ever an object.
///
/// It takes text, not bytes: serde_json checks UTF-8 only in the strings it
/// reads, and skips the bytes of members `T` ignores unchecked. The caller's
/// `str::from_utf8` makes the whole document strict UTF-8 (RFC 8259 §8.1).
pub(crate) fn from_json_object<T: DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
    struct ObjectOnly<T>(T);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = T;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map))
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
                .map(ObjectOnly)
        }
    }
    serde_json::from_str::<ObjectOnly<T>>(json).map(|o| o.0)
}
