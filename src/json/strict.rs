//! One meaning per input (I17): a deserializer wrapper that refuses, at every depth, the two
//! spellings serde accepts besides the canonical one:
//!
//! - a struct written as a JSON array (serde's positional form, `["129.00", "EUR"]` for
//!   `{"amount": "129.00", "currency": "EUR"}`), which a generic JSON reader sees as another
//!   document;
//! - `null` for an optional field, which serde reads as absent: absent is the one spelling.
//!
//! The wrapper forwards every call to the wrapped deserializer and wraps what comes back
//! (visitors, sequences, maps, enums), so the checks reach every nested value read through
//! serde's visitor protocol. Values that serde buffers before choosing their type (internally
//! tagged or untagged enums, flattened fields) are read from the buffer without it.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

/// What the visitor was asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Any,
    Struct,
    Option,
}

/// A deserializer that refuses positional structs and `null` options (see the module doc).
/// With `DEEP`, every nested value is read through the wrapper too (what `from_json` uses);
/// without, only the value itself: a struct refuses the positional form, an enum's struct
/// variants too, and nothing else changes (what each domain type's `Deserialize` uses, see
/// `json::object_only`).
pub(crate) struct Strict<D, const DEEP: bool = true>(pub(crate) D);

struct Seed<S>(S);

struct Wrap<V, const DEEP: bool> {
    inner: V,
    want: Want,
}

struct Seq<A>(A);
struct Map<A>(A);
struct Enum<A, const DEEP: bool>(A);
struct Variant<A, const DEEP: bool>(A);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict::<_, true>(d))
    }
}

fn any<V, const DEEP: bool>(inner: V) -> Wrap<V, DEEP> {
    Wrap {
        inner,
        want: Want::Any,
    }
}

macro_rules! forward_de {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method($($arg,)* any::<V, DEEP>(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>, const DEEP: bool> Deserializer<'de> for Strict<D, DEEP> {
    type Error = D::Error;

    forward_de! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        if !DEEP {
            return self.0.deserialize_option(visitor);
        }
        self.0.deserialize_option(Wrap::<V, DEEP> {
            inner: visitor,
            want: Want::Option,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(
            name,
            fields,
            Wrap::<V, DEEP> {
                inner: visitor,
                want: Want::Struct,
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

/// Messages start with serde's `invalid type: ` so that they read as wrong-type errors.
const NULL: &str = "an absent field (null is not accepted for an optional field: omit it)";
const POSITIONAL: &str = "an object (the positional array form is not accepted)";

impl<'de, V: Visitor<'de>, const DEEP: bool> Visitor<'de> for Wrap<V, DEEP> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        // Floats are only passed through to the wrapped visitor, which decides: no domain type
        // accepts a JSON number as money (amounts are decimal strings), so none is read here.
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        if self.want == Want::Option {
            return Err(E::invalid_type(Unexpected::Other("null"), &NULL));
        }
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        if self.want == Want::Option {
            return Err(E::invalid_type(Unexpected::Other("null"), &NULL));
        }
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        if !DEEP {
            return self.inner.visit_some(d);
        }
        self.inner.visit_some(Strict::<_, true>(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        if !DEEP {
            return self.inner.visit_newtype_struct(d);
        }
        self.inner.visit_newtype_struct(Strict::<_, true>(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.want == Want::Struct {
            return Err(de::Error::invalid_type(Unexpected::Seq, &POSITIONAL));
        }
        if !DEEP {
            return self.inner.visit_seq(seq);
        }
        self.inner.visit_seq(Seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        if !DEEP {
            return self.inner.visit_map(map);
        }
        self.inner.visit_map(Map(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Enum::<A, DEEP>(data))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>, const DEEP: bool> EnumAccess<'de> for Enum<A, DEEP> {
    type Error = A::Error;
    type Variant = Variant<A::Variant, DEEP>;
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        if !DEEP {
            let (value, variant) = self.0.variant_seed(seed)?;
            return Ok((value, Variant(variant)));
        }
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Variant(variant)))
    }
}

impl<'de, A: VariantAccess<'de>, const DEEP: bool> VariantAccess<'de> for Variant<A, DEEP> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        if !DEEP {
            return self.0.newtype_variant_seed(seed);
        }
        self.0.newtype_variant_seed(Seed(seed))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, any::<V, DEEP>(visitor))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(
            fields,
            Wrap::<V, DEEP> {
                inner: visitor,
                want: Want::Struct,
            },
        )
    }
}
