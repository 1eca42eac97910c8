//! JSON in the browser through the browser's own `JSON.parse`/`JSON.stringify`, so the bundles carry no JSON
//! parser of their own (serde_json led twiggy's list of dependencies by size).
//!
//! Parsed values are read into our types by [`JsDeserializer`], a small serde deserializer over `JsValue`, and
//! written by [`JsSerializer`].
//! It exists for weight, not features: its error carries no message, so serde's error formatting (which
//! drags float printing, `{:?}` of strings and every "invalid type: …" text into each bundle) is never linked.
//! A bundle only needs to know *that* a frame or body did not have the expected shape; the server's tests
//! (serde_json, same types) pin down the shape itself.

use std::fmt;

use js_sys::{Array, Object, Reflect};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde::ser;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

use cartwheel_core::protocol::{Notice, ServerMessage};
use cartwheel_core::version::Epoch;

/// Parse JSON text into `T`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Option<T> {
    let value = js_sys::JSON::parse(text).ok()?;
    from_js(value)
}

/// A JS value (e.g. an event's `detail` or a `fetch` body) into `T`.
pub fn from_js<T: DeserializeOwned>(value: JsValue) -> Option<T> {
    T::deserialize(JsDeserializer(value)).ok()
}

/// A frame from the server, dispatched on its `"type"` by hand. Deriving it through serde's internally tagged
/// enum made serde buffer every frame into its `Content` tree first, which put a second deserializer for every
/// payload type into each bundle (~10 KB gzip apiece). The shapes are the same types the server serializes, and
/// the server's tests pin them; a new [`ServerMessage`] variant must be added here too (unknown types are
/// ignored by clients, so an old bundle survives a newer server). `NOTICE` is left out: see [`parse_notice`].
pub fn parse_server_message(text: &str) -> Option<ServerMessage> {
    let frame = js_sys::JSON::parse(text).ok()?;
    let field = |name: &str| Reflect::get(&frame, &JsValue::from_str(name)).ok();
    let message = match field("type")?.as_string()?.as_str() {
        "CART_UPDATE" => {
            ServerMessage::CartUpdate { version: from_js(field("version")?)?, data: from_js(field("data")?)? }
        }
        "PONG" => {
            ServerMessage::Pong { id: from_js(field("id")?)?, server_time_ms: from_js(field("server_time_ms")?)? }
        }
        "ERROR" => ServerMessage::Error { code: from_js(field("code")?)?, message: field("message")?.as_string()? },
        "PRODUCT_UPDATE" => ServerMessage::ProductUpdate { data: from_js(field("data")?)? },
        // Read by `parse_notice`, where it is needed (see there).
        _ => return None,
    };
    Some(message)
}

/// A `NOTICE` frame's epoch, seq and notice (what the shell needs of it). Apart from [`parse_server_message`]
/// (which leaves `NOTICE` out), so only a bundle that reads notices links it; the others pass the frame on.
pub fn parse_notice(text: &str) -> Option<(Epoch, (u64, Notice))> {
    let frame = js_sys::JSON::parse(text).ok()?;
    let epoch = Reflect::get(&frame, &JsValue::from_str("epoch")).ok()?.as_string()?;
    Some((Epoch::parse(&epoch)?, posted(&frame)?))
}

/// A `PRESENCE` frame's counts: shoppers online, and each changed product's carts (unreadable entries left out).
pub fn parse_presence(text: &str) -> Option<(u64, Vec<(String, u64)>)> {
    let frame = js_sys::JSON::parse(text).ok()?;
    let online = Reflect::get(&frame, &JsValue::from_str("online")).ok()?.as_f64()? as u64;
    let carts = Reflect::get(&frame, &JsValue::from_str("in_carts")).ok()?.dyn_into::<Object>().ok()?;
    let in_carts = Object::entries(&carts)
        .iter()
        .filter_map(|entry| {
            let pair: Array = entry.dyn_into().ok()?;
            Some((pair.get(0).as_string()?, pair.get(1).as_f64()? as u64))
        })
        .collect();
    Some((online, in_carts))
}

/// A stored notice's `seq` and `data`, from a `NOTICE` frame or an entry of `GET /api/notices`.
fn posted(object: &JsValue) -> Option<(u64, Notice)> {
    let field = |name: &str| Reflect::get(object, &JsValue::from_str(name)).ok();
    Some((from_js(field("seq")?)?, from_js(field("data")?)?))
}

/// The answer of `GET /api/notices`: its epoch and notices (unreadable entries are left out).
pub fn notice_list(body: &JsValue) -> Option<(Epoch, Vec<(u64, Notice)>)> {
    let epoch = Epoch::parse(&Reflect::get(body, &JsValue::from_str("epoch")).ok()?.as_string()?)?;
    let list = Reflect::get(body, &JsValue::from_str("notices")).ok()?.dyn_into::<Array>().ok()?;
    Some((epoch, list.iter().filter_map(|n| posted(&n)).collect()))
}

/// `T` as a plain JS object (objects for maps, numbers for integers), e.g. an event's `detail`.
pub fn to_js<T: Serialize>(value: &T) -> Option<JsValue> {
    value.serialize(JsSerializer).ok()
}

/// `T` as JSON text.
pub fn stringify<T: Serialize>(value: &T) -> Option<String> {
    js_sys::JSON::stringify(&to_js(value)?).ok().map(String::from)
}

/// The value did not have the shape the target type expects. Deliberately without detail (see the module doc).
#[derive(Debug)]
pub struct ShapeError;

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unexpected JSON shape")
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ShapeError
    }
}

impl ser::Error for ShapeError {
    fn custom<T: fmt::Display>(_: T) -> Self {
        ShapeError
    }
}

/// Largest integer a JS number holds exactly (2^53 − 1); larger "integers" were already rounded by `JSON.parse`.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Reads a parsed JSON value (null, boolean, number, string, array, plain object) into a serde type.
pub struct JsDeserializer(pub JsValue);

impl JsDeserializer {
    /// The number as an exact integer, if it is one.
    fn integer(&self) -> Option<f64> {
        let n = self.0.as_f64()?;
        (n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER).then_some(n)
    }
}

impl<'de> de::Deserializer<'de> for JsDeserializer {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let v = &self.0;
        if v.is_null() || v.is_undefined() {
            visitor.visit_unit()
        } else if let Some(b) = v.as_bool() {
            visitor.visit_bool(b)
        } else if let Some(n) = self.integer() {
            if n < 0.0 {
                visitor.visit_i64(n as i64)
            } else {
                visitor.visit_u64(n as u64)
            }
        } else if let Some(n) = v.as_f64() {
            visitor.visit_f64(n)
        } else if let Some(s) = v.as_string() {
            visitor.visit_string(s)
        } else if Array::is_array(v) {
            visitor.visit_seq(Elements::new(self.0.unchecked_into()))
        } else if v.is_object() {
            visitor.visit_map(Entries::new(self.0.unchecked_into()))
        } else {
            Err(ShapeError)
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if self.0.is_null() || self.0.is_undefined() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    /// Only unit variants written as strings (`"live"`), which is all our enums use outside tagged frames.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        let name = self.0.as_string().ok_or(ShapeError)?;
        visitor.visit_enum(UnitVariant(name))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_unit()
    }

    // The typed entry points below each check for their one expected kind, so a type's deserializer does not
    // carry every branch of `deserialize_any` (that alone was ~12 KB of a bundle).

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_bool(self.0.as_bool().ok_or(ShapeError)?)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_i64(self.integer().ok_or(ShapeError)? as i64)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        let n = self.integer().filter(|n| *n >= 0.0).ok_or(ShapeError)?;
        visitor.visit_u64(n as u64)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_f64(self.0.as_f64().ok_or(ShapeError)?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_string(self.0.as_string().ok_or(ShapeError)?)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if !Array::is_array(&self.0) {
            return Err(ShapeError);
        }
        visitor.visit_seq(Elements::new(self.0.unchecked_into()))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if !self.0.is_object() || Array::is_array(&self.0) {
            return Err(ShapeError);
        }
        visitor.visit_map(Entries::new(self.0.unchecked_into()))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        if !(self.0.is_null() || self.0.is_undefined()) {
            return Err(ShapeError);
        }
        visitor.visit_unit()
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, ShapeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.deserialize_map(visitor)
    }

    forward_to_deserialize_any! { i128 u128 bytes byte_buf }
}

/// An array's elements, in order.
struct Elements {
    array: Array,
    next: u32,
}

impl Elements {
    fn new(array: Array) -> Self {
        Elements { array, next: 0 }
    }
}

impl<'de> de::SeqAccess<'de> for Elements {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, ShapeError> {
        if self.next >= self.array.length() {
            return Ok(None);
        }
        let value = self.array.get(self.next);
        self.next += 1;
        seed.deserialize(JsDeserializer(value)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.array.length().saturating_sub(self.next) as usize)
    }
}

/// An object's own enumerable properties, in the order `Object.keys` gives them.
struct Entries {
    object: Object,
    keys: Elements,
    value: Option<JsValue>,
}

impl Entries {
    fn new(object: Object) -> Self {
        let keys = Elements::new(Object::keys(&object));
        Entries { object, keys, value: None }
    }
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = ShapeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, ShapeError> {
        if self.keys.next >= self.keys.array.length() {
            return Ok(None);
        }
        let key = self.keys.array.get(self.keys.next);
        self.keys.next += 1;
        self.value = Some(Reflect::get(&self.object, &key).map_err(|_| ShapeError)?);
        seed.deserialize(JsDeserializer(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ShapeError> {
        let value = self.value.take().ok_or(ShapeError)?;
        seed.deserialize(JsDeserializer(value))
    }

    fn size_hint(&self) -> Option<usize> {
        de::SeqAccess::size_hint(&self.keys)
    }
}

/// A unit variant named by a string.
struct UnitVariant(String);

impl<'de> de::EnumAccess<'de> for UnitVariant {
    type Error = ShapeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), ShapeError> {
        let name: de::value::StrDeserializer<'_, ShapeError> = self.0.as_str().into_deserializer();
        let value = seed.deserialize(name)?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for UnitVariant {
    type Error = ShapeError;

    fn unit_variant(self) -> Result<(), ShapeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _: T) -> Result<T::Value, ShapeError> {
        Err(ShapeError)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, ShapeError> {
        Err(ShapeError)
    }

    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], _: V) -> Result<V::Value, ShapeError> {
        Err(ShapeError)
    }
}

/// Writes a serde type as a plain JS value (objects for structs and maps, numbers for integers, strings for
/// unit variants): what `JSON.stringify` turns into the same JSON the server's serde_json writes.
/// Ours rather than serde-wasm-bindgen's for weight: that one keeps a cache of field-name strings (a hash map
/// and its code in every bundle) that these few small values never need.
pub struct JsSerializer;

impl ser::Serializer for JsSerializer {
    type Ok = JsValue;
    type Error = ShapeError;
    type SerializeSeq = ArrayBuilder;
    type SerializeTuple = ArrayBuilder;
    type SerializeTupleStruct = ArrayBuilder;
    type SerializeTupleVariant = ser::Impossible<JsValue, ShapeError>;
    type SerializeMap = ObjectBuilder;
    type SerializeStruct = ObjectBuilder;
    type SerializeStructVariant = ser::Impossible<JsValue, ShapeError>;

    fn serialize_bool(self, v: bool) -> Result<JsValue, ShapeError> {
        Ok(JsValue::from_bool(v))
    }

    fn serialize_i8(self, v: i8) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    /// Exact up to 2^53 (a JS number); our integers (cents, quantities, versions, ids) stay far below.
    fn serialize_i64(self, v: i64) -> Result<JsValue, ShapeError> {
        self.serialize_f64(v as f64)
    }

    fn serialize_u8(self, v: u8) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<JsValue, ShapeError> {
        self.serialize_f64(v as f64)
    }

    fn serialize_f32(self, v: f32) -> Result<JsValue, ShapeError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<JsValue, ShapeError> {
        Ok(JsValue::from_f64(v))
    }

    fn serialize_char(self, v: char) -> Result<JsValue, ShapeError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<JsValue, ShapeError> {
        Ok(JsValue::from_str(v))
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<JsValue, ShapeError> {
        Err(ShapeError)
    }

    fn serialize_none(self) -> Result<JsValue, ShapeError> {
        Ok(JsValue::NULL)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<JsValue, ShapeError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<JsValue, ShapeError> {
        Ok(JsValue::NULL)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<JsValue, ShapeError> {
        Ok(JsValue::NULL)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<JsValue, ShapeError> {
        Ok(JsValue::from_str(variant))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<JsValue, ShapeError> {
        value.serialize(self)
    }

    /// Externally tagged, as serde_json writes it: `{"Variant": value}`.
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<JsValue, ShapeError> {
        let object = Object::new();
        Reflect::set(&object, &JsValue::from_str(variant), &value.serialize(JsSerializer)?).map_err(|_| ShapeError)?;
        Ok(object.into())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<ArrayBuilder, ShapeError> {
        Ok(ArrayBuilder(Array::new()))
    }

    fn serialize_tuple(self, _: usize) -> Result<ArrayBuilder, ShapeError> {
        Ok(ArrayBuilder(Array::new()))
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<ArrayBuilder, ShapeError> {
        Ok(ArrayBuilder(Array::new()))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, ShapeError> {
        Err(ShapeError)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<ObjectBuilder, ShapeError> {
        Ok(ObjectBuilder { object: Object::new(), key: None })
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<ObjectBuilder, ShapeError> {
        Ok(ObjectBuilder { object: Object::new(), key: None })
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, ShapeError> {
        Err(ShapeError)
    }
}

/// A JS array being filled.
pub struct ArrayBuilder(Array);

impl ArrayBuilder {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ShapeError> {
        self.0.push(&value.serialize(JsSerializer)?);
        Ok(())
    }
}

impl ser::SerializeSeq for ArrayBuilder {
    type Ok = JsValue;
    type Error = ShapeError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ShapeError> {
        self.push(value)
    }

    fn end(self) -> Result<JsValue, ShapeError> {
        Ok(self.0.into())
    }
}

impl ser::SerializeTuple for ArrayBuilder {
    type Ok = JsValue;
    type Error = ShapeError;

    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ShapeError> {
        self.push(value)
    }

    fn end(self) -> Result<JsValue, ShapeError> {
        Ok(self.0.into())
    }
}

impl ser::SerializeTupleStruct for ArrayBuilder {
    type Ok = JsValue;
    type Error = ShapeError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ShapeError> {
        self.push(value)
    }

    fn end(self) -> Result<JsValue, ShapeError> {
        Ok(self.0.into())
    }
}

/// A JS object being filled; a map's key waits here for its value.
pub struct ObjectBuilder {
    object: Object,
    key: Option<JsValue>,
}

impl ObjectBuilder {
    fn set<T: ?Sized + Serialize>(&mut self, key: &JsValue, value: &T) -> Result<(), ShapeError> {
        Reflect::set(&self.object, key, &value.serialize(JsSerializer)?).map(drop).map_err(|_| ShapeError)
    }
}

impl ser::SerializeMap for ObjectBuilder {
    type Ok = JsValue;
    type Error = ShapeError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), ShapeError> {
        self.key = Some(key.serialize(JsSerializer)?);
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), ShapeError> {
        let key = self.key.take().ok_or(ShapeError)?;
        self.set(&key, value)
    }

    fn end(self) -> Result<JsValue, ShapeError> {
        Ok(self.object.into())
    }
}

impl ser::SerializeStruct for ObjectBuilder {
    type Ok = JsValue;
    type Error = ShapeError;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Result<(), ShapeError> {
        self.set(&JsValue::from_str(name), value)
    }

    fn end(self) -> Result<JsValue, ShapeError> {
        Ok(self.object.into())
    }
}
