//! The protobuf JSON mapping of `arista.event.v1` events: a hand-written
//! writer and a descriptor-driven reader.
//!
//! The writer runs once per event on the hot path (hundreds of thousands of
//! events per second), so it appends straight into a caller-owned buffer
//! instead of building a `serde_json::Value` or going through reflection;
//! `benches/json.rs` measures it against prost-reflect's generated serializer
//! ([`event_to_json_reflect`]), which it beats by more than ten times.
//! The reader is used for scripts and recordings, where clarity of error
//! messages matters more than speed: prost-reflect deserialises the JSON with
//! the protos' own descriptors and serde_path_to_error names the field that
//! failed, so no message is walked by hand.
//!
//! Output follows the canonical protobuf JSON mapping: lowerCamelCase names,
//! fields in field-number order, proto3 defaults omitted, enums by name
//! (numbers for values this proto does not name), wrappers as bare values,
//! `int64` map keys as strings and timestamps as RFC 3339 in UTC (printed by
//! prost-types).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use prost_types::Timestamp;
use serde_json::Value;

use crate::arista::time::TimeBounds;
use crate::event::{
    ComponentType, Event, EventComponents, EventKey, EventMetadata, EventNotes, EventSeverity,
    EventStreamResponse,
};
use crate::Operation;

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Serialises `ev` as one JSON object.
pub fn event_to_json(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_event(ev, &mut out);
    out
}

/// Appends the protobuf JSON form of `ev` to `out`.
pub fn write_event(ev: &Event, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    if let Some(key) = &ev.key {
        o.field(b"key");
        write_key(key, o.out);
    }
    if ev.severity != 0 {
        o.field(b"severity");
        match EventSeverity::try_from(ev.severity) {
            Ok(s) => write_str(s.as_str_name(), o.out),
            Err(_) => write_i64(ev.severity as i64, o.out),
        }
    }
    o.opt_str(b"title", &ev.title);
    o.opt_str(b"description", &ev.description);
    o.opt_str(b"eventType", &ev.event_type);
    if let Some(data) = &ev.data {
        o.field(b"data");
        let mut d = Obj::open(o.out);
        if !data.data.is_empty() {
            d.field(b"data");
            write_str_map(&data.data, d.out);
        }
        d.close();
    }
    if let Some(comps) = &ev.components {
        o.field(b"components");
        write_components(comps, o.out);
    }
    if let Some(ack) = &ev.ack {
        o.field(b"ack");
        let mut a = Obj::open(o.out);
        a.opt_bool(b"ack", ack.ack);
        a.opt_str(b"acker", &ack.acker);
        a.opt_ts(b"ackTime", &ack.ack_time);
        a.close();
    }
    if let Some(notes) = &ev.notes {
        o.field(b"notes");
        write_notes(notes, o.out);
    }
    o.opt_ts(b"lastUpdatedTime", &ev.last_updated_time);
    if let Some(read) = &ev.read {
        o.field(b"read");
        let mut r = Obj::open(o.out);
        r.opt_bool(b"read", read.read);
        r.opt_str(b"reader", &read.reader);
        r.opt_ts(b"readTime", &read.read_time);
        r.close();
    }
    o.opt_str(b"ruleId", &ev.rule_id);
    o.opt_ts(b"deleteTime", &ev.delete_time);
    if let Some(meta) = &ev.metadata {
        o.field(b"metadata");
        write_metadata(meta, o.out);
    }
    o.close();
}

fn write_metadata(meta: &EventMetadata, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    if !meta.values.is_empty() {
        o.field(b"values");
        o.out.push(b'[');
        for (i, group) in meta.values.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            let mut g = Obj::open(o.out);
            if let Some(map) = &group.values {
                g.field(b"values");
                let mut m = Obj::open(g.out);
                if !map.values.is_empty() {
                    m.field(b"values");
                    write_str_map(&map.values, m.out);
                }
                m.close();
            }
            g.close();
        }
        o.out.push(b']');
    }
    o.close();
}

/// Appends one stream response (`{"value":..,"time":..,"type":..}`) to `out`.
pub fn write_stream_response(resp: &EventStreamResponse, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    if let Some(v) = &resp.value {
        o.field(b"value");
        write_event(v, o.out);
    }
    o.opt_ts(b"time", &resp.time);
    if resp.r#type != 0 {
        o.field(b"type");
        match Operation::try_from(resp.r#type) {
            Ok(op) => write_str(op.as_str_name(), o.out),
            Err(_) => write_i64(resp.r#type as i64, o.out),
        }
    }
    o.close();
}

fn write_key(key: &EventKey, out: &mut Vec<u8>) {
    let mut k = Obj::open(out);
    k.opt_str(b"key", &key.key);
    k.opt_ts(b"timestamp", &key.timestamp);
    k.close();
}

fn write_components(comps: &EventComponents, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    if !comps.components.is_empty() {
        o.field(b"components");
        o.out.push(b'[');
        for (i, c) in comps.components.iter().enumerate() {
            if i > 0 {
                o.out.push(b',');
            }
            let mut co = Obj::open(o.out);
            if c.r#type != 0 {
                co.field(b"type");
                match ComponentType::try_from(c.r#type) {
                    Ok(t) => write_str(t.as_str_name(), co.out),
                    Err(_) => write_i64(c.r#type as i64, co.out),
                }
            }
            if !c.components.is_empty() {
                co.field(b"components");
                write_str_map(&c.components, co.out);
            }
            co.close();
        }
        o.out.push(b']');
    }
    o.close();
}

fn write_notes(notes: &EventNotes, out: &mut Vec<u8>) {
    let mut o = Obj::open(out);
    if !notes.notes.is_empty() {
        o.field(b"notes");
        let mut m = Obj::open(o.out);
        for (k, note) in &notes.notes {
            // int64 map keys are JSON strings.
            m.sep();
            m.out.push(b'"');
            write_i64(*k, m.out);
            m.out.extend_from_slice(b"\":");
            let mut n = Obj::open(m.out);
            n.opt_str(b"note", &note.note);
            n.opt_str(b"noteCreator", &note.note_creator);
            n.close();
        }
        m.close();
    }
    o.close();
}

fn write_str_map(map: &BTreeMap<String, String>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write_str(v, out);
    }
    out.push(b'}');
}

/// An object being written: tracks whether a comma is needed.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }
    fn sep(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }
    /// Writes `,"name":` (names are ASCII identifiers, no escaping needed).
    fn field(&mut self, name: &[u8]) {
        self.sep();
        self.out.push(b'"');
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b"\":");
    }
    fn opt_str(&mut self, name: &[u8], v: &Option<String>) {
        if let Some(s) = v {
            self.field(name);
            write_str(s, self.out);
        }
    }
    fn opt_bool(&mut self, name: &[u8], v: Option<bool>) {
        if let Some(b) = v {
            self.field(name);
            self.out
                .extend_from_slice(if b { b"true" } else { b"false" });
        }
    }
    fn opt_ts(&mut self, name: &[u8], v: &Option<Timestamp>) {
        if let Some(ts) = v {
            self.field(name);
            write_timestamp(ts, self.out);
        }
    }
    fn close(self) {
        self.out.push(b'}');
    }
}

fn write_i64(v: i64, out: &mut Vec<u8>) {
    // A small manual itoa: avoids fmt machinery on the hot path.
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Which bytes need escaping: 0 = none, otherwise the escape letter (or `u`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` as a JSON string. Non-ASCII stays raw UTF-8 (valid JSON and
/// what protobuf JSON encoders emit); only `"`, `\` and control characters
/// are escaped. Unescaped runs are copied in one go.
fn write_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if esc == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes an RFC 3339 UTC timestamp with 0, 3, 6 or 9 fractional digits, as
/// protobuf JSON encoders do. Out-of-range nanos are normalised first.
///
/// Hand-written on purpose: it runs for every timestamp of every event, and
/// prost-types' `Display` (which the reader's parsing uses) took 182 ns a
/// timestamp against this code's 41 ns in the same run, making
/// `event_to_json` about 55% slower (BENCHMARKS.md).
// `u64::is_multiple_of` needs Rust 1.87; the workspace supports 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn write_timestamp(ts: &Timestamp, out: &mut Vec<u8>) {
    let mut secs = ts.seconds;
    let mut nanos = ts.nanos as i64;
    if !(0..1_000_000_000).contains(&nanos) {
        secs = secs.saturating_add(nanos.div_euclid(1_000_000_000));
        nanos = nanos.rem_euclid(1_000_000_000);
    }
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    out.push(b'"');
    if y < 0 {
        out.push(b'-');
    }
    digits(y.unsigned_abs(), 4, out);
    out.push(b'-');
    digits(m as u64, 2, out);
    out.push(b'-');
    digits(d as u64, 2, out);
    out.push(b'T');
    digits((sod / 3600) as u64, 2, out);
    out.push(b':');
    digits((sod / 60 % 60) as u64, 2, out);
    out.push(b':');
    digits((sod % 60) as u64, 2, out);
    if nanos != 0 {
        out.push(b'.');
        let nanos = nanos as u64;
        if nanos % 1_000_000 == 0 {
            digits(nanos / 1_000_000, 3, out);
        } else if nanos % 1_000 == 0 {
            digits(nanos / 1_000, 6, out);
        } else {
            digits(nanos, 9, out);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// Writes `v` zero-padded to exactly `width` digits (higher digits dropped).
fn digits(mut v: u64, width: usize, out: &mut Vec<u8>) {
    let mut buf = [b'0'; 9];
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm; exact for the whole i64 range we use).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The generated alternative to [`event_to_json`]: prost-reflect's serde
/// serializer, driven by the descriptors, over a dynamic copy of `ev` (it can
/// only reach a generated struct by re-decoding its protobuf encoding).
///
/// Not used on the hot path: `benches/json.rs` measures it against the
/// hand-written writer, and the tests check that both give the same JSON.
pub fn event_to_json_reflect(ev: &Event) -> Vec<u8> {
    static EVENT: LazyLock<MessageDescriptor> = LazyLock::new(|| {
        crate::descriptor_pool()
            .get_message_by_name("arista.event.v1.Event")
            .expect("the generated types come from the same descriptors")
    });
    let msg = DynamicMessage::decode(EVENT.clone(), ev.encode_to_vec().as_slice())
        .expect("an Event's own encoding decodes as an Event");
    serde_json::to_vec(&msg).expect("a dynamic message always serialises")
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Parses one JSON line holding an `EventStreamResponse`.
///
/// Accepts lowerCamelCase and original snake_case names, enums by name or
/// number, `null` as "not set", and ignores unknown fields, as the protobuf
/// JSON mapping requires of parsers. An enum name this proto does not know is
/// an error (a number is kept as is).
pub fn parse_stream_response(line: &str) -> Result<EventStreamResponse, String> {
    read("arista.event.v1.EventStreamResponse", line)
}

/// Parses the protobuf JSON form of one `Event` (as written by [`write_event`]).
pub fn parse_event_json(text: &str) -> Result<Event, String> {
    read("arista.event.v1.Event", text)
}

/// Parses `{"start":..,"end":..}` time bounds (used by tools building requests).
pub fn parse_time_bounds(text: &str) -> Result<TimeBounds, String> {
    read("arista.time.TimeBounds", text)
}

/// Parses an RFC 3339 timestamp such as `2026-11-20T09:14:03.125Z`, with
/// prost-types' parser. Beyond strict RFC 3339 it also takes what that parser
/// takes: `t`/`z` in either case, offsets with or without minutes or colon,
/// a space for `T`, a bare date (midnight UTC), no offset (UTC), more than 9
/// fractional digits (cut to 9) and a leap second (read as `:59`).
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

/// Reads `text` as the message `full_name` of [`crate::descriptor_pool`] and
/// converts it to its generated type `T`.
fn read<T: prost::Message + Default>(full_name: &str, text: &str) -> Result<T, String> {
    let desc = crate::descriptor_pool()
        .get_message_by_name(full_name)
        .expect("the generated types come from the same descriptors");
    let mut v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    prepare(&mut v, &desc, "")?;
    // Unknown fields are gone (see `prepare`), so denying unknown names only
    // rejects enum names this proto does not define.
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(v, &mut track);
    let msg = DynamicMessage::deserialize_with_options(desc, de, &options).map_err(|e| {
        let path = track.path().to_string();
        // An empty path prints as ".".
        format!("{e} at {}", at(path.trim_start_matches('.')))
    })?;
    // Cannot fail: the dynamic message has the descriptor `T` was generated from.
    msg.transcode_to().map_err(|e| format!("{full_name}: {e}"))
}

/// Readies parsed JSON for prost-reflect, walking it with `desc`:
///
/// - drops the fields the protos do not define (newer CVPs add some).
///   prost-reflect's `deny_unknown_fields(false)` would skip them too, but it
///   would also turn an unknown enum *name* into "not set", which this reader
///   has always reported as an error;
/// - parses every timestamp with prost-types and writes it back in canonical
///   form, so the reader takes every form [`parse_timestamp`] takes
///   (prost-reflect alone insists on upper-case `T` and `Z`), and a bad one
///   is reported with its value and path.
///
/// Everything else (types, enums, maps, wrappers, `null`) is left to
/// prost-reflect.
fn prepare(v: &mut Value, desc: &MessageDescriptor, path: &str) -> Result<(), String> {
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            let ts = match v {
                Value::String(s) => parse_timestamp(s)
                    .ok_or_else(|| format!("bad timestamp {v} at {}", at(path)))?,
                _ => {
                    return Err(format!(
                        "bad timestamp {v} at {}: expected an RFC 3339 string",
                        at(path)
                    ))
                }
            };
            *v = Value::String(ts.to_string());
            return Ok(());
        }
        // Other well-known types (the wrappers) are bare JSON values.
        name if name.starts_with("google.protobuf.") => return Ok(()),
        _ => {}
    }
    let Value::Object(obj) = v else {
        return Err(format!(
            "expected an object at {}, got {}",
            at(path),
            kind(v)
        ));
    };
    obj.retain(|name, _| field_named(desc, name).is_some());
    for (name, val) in obj.iter_mut() {
        let Some(field) = field_named(desc, name) else {
            continue;
        };
        let Kind::Message(msg) = field.kind() else {
            continue;
        };
        let p = join(path, name);
        match val {
            // Not set; prost-reflect says so.
            Value::Null => {}
            Value::Array(items) if field.is_list() => {
                for (i, item) in items.iter_mut().enumerate() {
                    prepare(item, &msg, &format!("{p}[{i}]"))?;
                }
            }
            Value::Object(entries) if field.is_map() => {
                if let Kind::Message(value) = msg.map_entry_value_field().kind() {
                    for (k, item) in entries.iter_mut() {
                        prepare(item, &value, &join(&p, k))?;
                    }
                }
            }
            _ if !field.is_list() && !field.is_map() => prepare(val, &msg, &p)?,
            // A list or map of the wrong JSON type: prost-reflect reports it.
            _ => {}
        }
    }
    Ok(())
}

/// Looks a JSON key up as prost-reflect does: JSON name first, then the
/// original proto name.
fn field_named(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_json_name(name)
        .or_else(|| desc.get_field_by_name(name))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn at(path: &str) -> &str {
    if path.is_empty() {
        "top level"
    } else {
        path
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventComponent;

    const SAMPLE: &str = include_str!("../../simulator/testdata/sample-events.jsonl");

    fn roundtrip_line(line: &str) -> Value {
        let resp = parse_stream_response(line).unwrap();
        let mut out = Vec::new();
        write_stream_response(&resp, &mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn sample_file_round_trips() {
        let mut n = 0;
        for line in SAMPLE.lines().filter(|l| !l.trim().is_empty()) {
            let orig: Value = serde_json::from_str(line).unwrap();
            assert_eq!(roundtrip_line(line), orig, "line: {line}");
            n += 1;
        }
        assert!(n > 0);
    }

    #[test]
    fn writes_fields_in_field_number_order() {
        let line = SAMPLE.lines().next().unwrap();
        let resp = parse_stream_response(line).unwrap();
        let mut out = Vec::new();
        write_stream_response(&resp, &mut out);
        // The sample is already canonical, so the bytes match exactly.
        assert_eq!(std::str::from_utf8(&out).unwrap().len(), line.len());
        let ev = event_to_json(resp.value.as_ref().unwrap());
        let s = String::from_utf8(ev).unwrap();
        let pos = |k: &str| s.find(&format!("\"{k}\":")).unwrap();
        assert!(pos("key") < pos("severity"));
        assert!(pos("severity") < pos("title"));
        assert!(pos("eventType") < pos("data"));
        assert!(pos("lastUpdatedTime") < pos("ruleId"));
    }

    #[test]
    fn defaults_omitted_and_empty_wrapper_kept() {
        let ev = Event {
            severity: 0,
            description: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(event_to_json(&ev), br#"{"description":""}"#);
        assert_eq!(event_to_json(&Event::default()), b"{}");
    }

    #[test]
    fn unknown_enum_values_are_numbers() {
        let ev = Event {
            severity: 42,
            components: Some(EventComponents {
                components: vec![EventComponent {
                    r#type: 99,
                    components: Default::default(),
                }],
            }),
            ..Default::default()
        };
        let json = event_to_json(&ev);
        assert_eq!(
            json,
            br#"{"severity":42,"components":{"components":[{"type":99}]}}"#
        );
        let back = parse_event_json(std::str::from_utf8(&json).unwrap()).unwrap();
        assert_eq!(back, ev);
        let resp = parse_stream_response(r#"{"type":77,"value":{"severity":3}}"#).unwrap();
        assert_eq!(resp.r#type, 77);
        assert_eq!(resp.value.unwrap().severity, 3);
        let mut out = Vec::new();
        write_stream_response(
            &EventStreamResponse {
                r#type: 77,
                ..Default::default()
            },
            &mut out,
        );
        assert_eq!(out, br#"{"type":77}"#);
    }

    #[test]
    fn non_ascii_and_escapes() {
        let ev = Event {
            description: Some("über ∆ \"q\" \\ \n\t\u{1}é".into()),
            ..Default::default()
        };
        let json = event_to_json(&ev);
        let s = std::str::from_utf8(&json).unwrap();
        assert_eq!(
            s,
            "{\"description\":\"über ∆ \\\"q\\\" \\\\ \\n\\t\\u0001é\"}"
        );
        assert_eq!(parse_event_json(s).unwrap(), ev);
    }

    #[test]
    fn timestamp_fraction_digits() {
        let cases = [
            (0, "2026-11-20T09:14:03Z"),
            (125_000_000, "2026-11-20T09:14:03.125Z"),
            (125_400_000, "2026-11-20T09:14:03.125400Z"),
            (123_456_789, "2026-11-20T09:14:03.123456789Z"),
            (1, "2026-11-20T09:14:03.000000001Z"),
        ];
        for (nanos, text) in cases {
            let ts = Timestamp {
                seconds: 1_795_166_043,
                nanos,
            };
            let mut out = Vec::new();
            write_timestamp(&ts, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("\"{text}\""));
            assert_eq!(parse_timestamp(text), Some(ts));
        }
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:00Z"),
            Some(Timestamp::default())
        );
        assert_eq!(
            parse_timestamp("2000-02-29T01:00:00+01:00"),
            Some(Timestamp {
                seconds: 951_782_400,
                nanos: 0
            })
        );
        assert_eq!(parse_timestamp("2001-02-29T00:00:00Z"), None);
        assert_eq!(parse_timestamp("x"), None);
    }

    #[test]
    fn snake_case_numbers_and_unknown_fields() {
        let line = r#"{"value":{"key":{"key":"k","timestamp":"2026-01-01T00:00:00Z"},
            "severity":2,"event_type":"E","rule_id":"R","last_updated_time":"2026-01-01T00:00:01Z",
            "ack":{"ack":true,"ack_time":"2026-01-01T00:00:02Z"},
            "notes":{"notes":{"1700000000000":{"note":"n","note_creator":"me"}}},
            "newField":{"x":1}},"time":"2026-01-01T00:00:01Z","type":"DELETED","extra":null}"#;
        let resp = parse_stream_response(line).unwrap();
        assert_eq!(resp.r#type, Operation::Deleted as i32);
        let ev = resp.value.unwrap();
        assert_eq!(ev.severity, 2);
        assert_eq!(ev.event_type.as_deref(), Some("E"));
        assert_eq!(ev.rule_id.as_deref(), Some("R"));
        let note = &ev.notes.as_ref().unwrap().notes[&1_700_000_000_000];
        assert_eq!(note.note_creator.as_deref(), Some("me"));
        let s = String::from_utf8(event_to_json(&ev)).unwrap();
        assert!(
            s.contains(r#""notes":{"notes":{"1700000000000":{"note":"n","noteCreator":"me"}}}"#)
        );
        assert!(s.contains(r#""ack":{"ack":true,"ackTime":"2026-01-01T00:00:02Z"}"#));
    }

    #[test]
    fn errors_name_the_path() {
        let err = parse_stream_response(r#"{"value":{"key":{"timestamp":"x"}}}"#).unwrap_err();
        assert_eq!(err, r#"bad timestamp "x" at value.key.timestamp"#);
        let err = parse_stream_response(r#"{"value":{"severity":"LOUD"}}"#).unwrap_err();
        assert!(err.contains("value.severity"), "{err}");
        let err = parse_stream_response(r#"{"value":{"data":{"data":{"a":1}}}}"#).unwrap_err();
        assert!(err.contains("value.data.data.a"), "{err}");
        let err = parse_stream_response("[1]").unwrap_err();
        assert!(err.contains("top level"), "{err}");
        assert!(parse_stream_response("{")
            .unwrap_err()
            .contains("invalid JSON"));
    }

    /// Every field the writer knows, set, with text that needs escaping.
    const RICH: &str = r#"{"key":{"key":"k1","timestamp":"2026-11-20T09:14:03.000000001Z"},
        "severity":"EVENT_SEVERITY_CRITICAL","title":"über \"q\"\n","description":"",
        "eventType":"T","data":{"data":{"b":"2","a":"1"}},
        "components":{"components":[{"type":"COMPONENT_TYPE_DEVICE","components":{"deviceId":"D"}},{"type":99}]},
        "ack":{"ack":false,"acker":"me","ackTime":"2026-11-20T09:15:00.5Z"},
        "notes":{"notes":{"-5":{"note":"n"},"1700000000000":{"note":"m","noteCreator":"x"}}},
        "lastUpdatedTime":"2026-11-20T09:14:03.123456Z","read":{"read":true,"reader":"r","readTime":"1970-01-01T00:00:00Z"},
        "ruleId":"R","deleteTime":"2026-11-21T00:00:00Z",
        "metadata":{"values":[{"values":{"values":{"site":"a","pod":"1"}}},{}]}}"#;

    #[test]
    fn generated_writer_gives_the_same_json() {
        let mut events: Vec<Event> = SAMPLE
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_stream_response(l).unwrap().value.unwrap())
            .collect();
        events.push(parse_event_json(RICH).unwrap());
        events.push(Event {
            severity: 42,
            ..Default::default()
        });
        events.push(Event::default());
        for ev in &events {
            let hand: Value = serde_json::from_slice(&event_to_json(ev)).unwrap();
            let generated: Value = serde_json::from_slice(&event_to_json_reflect(ev)).unwrap();
            assert_eq!(hand, generated, "event: {ev:?}");
        }
        // The rich event reads back to itself through the hand-written writer.
        let rich = parse_event_json(RICH).unwrap();
        let back = parse_event_json(std::str::from_utf8(&event_to_json(&rich)).unwrap());
        assert_eq!(back.unwrap(), rich);
    }

    #[test]
    fn timestamps_beyond_strict_rfc3339() {
        let ts = Timestamp {
            seconds: 1_795_166_043,
            nanos: 125_000_000,
        };
        // What prost-types' parser takes besides `...T..Z`.
        for text in [
            "2026-11-20t09:14:03.125z",
            "2026-11-20T11:14:03.125+02:00",
            "2026-11-20T08:14:03.125-0100",
            "2026-11-20 09:14:03.125",
            "2026-11-20T09:14:03.1250000001Z",
        ] {
            assert_eq!(parse_timestamp(text), Some(ts), "{text}");
        }
        // The reader takes them too and keeps the instant.
        let resp = parse_stream_response(r#"{"time":"2026-11-20t11:14:03.125+02:00"}"#).unwrap();
        assert_eq!(resp.time, Some(ts));
        let tb = parse_time_bounds(r#"{"start":"2026-11-20T09:14:03.125Z","end":null,"x":1}"#);
        assert_eq!(
            tb.unwrap(),
            TimeBounds {
                start: Some(ts),
                end: None
            }
        );
        let err = parse_time_bounds(r#"{"end":5}"#).unwrap_err();
        assert_eq!(err, "bad timestamp 5 at end: expected an RFC 3339 string");
        // Out-of-range nanos are normalised before printing.
        let mut out = Vec::new();
        write_timestamp(
            &Timestamp {
                seconds: 1,
                nanos: -1,
            },
            &mut out,
        );
        assert_eq!(out, br#""1970-01-01T00:00:00.999999999Z""#);
    }

    #[test]
    fn unknown_fields_ignored_at_every_depth_unknown_enum_names_not() {
        let ev = parse_event_json(
            r#"{"components":{"components":[{"type":"COMPONENT_TYPE_DEVICE","new":[1]}],"n":{}},
                "notes":{"notes":{"7":{"note":"n","pinned":true}}},
                "metadata":{"values":[{"values":{"values":{"a":"b"},"v2":0},"w":1}]},
                "ack":{"ack":true,"ackSource":"x"},"key":{"key":"k","shard":3}}"#,
        )
        .unwrap();
        assert_eq!(ev.notes.unwrap().notes[&7].note.as_deref(), Some("n"));
        assert_eq!(ev.key.unwrap().key.as_deref(), Some("k"));
        assert_eq!(ev.metadata.unwrap().values.len(), 1);
        let err =
            parse_event_json(r#"{"components":{"components":[{"type":"NEW_KIND"}]}}"#).unwrap_err();
        assert!(err.contains("components.components[0].type"), "{err}");
        let err = parse_event_json(r#"{"notes":{"notes":{"7":{"note":1}}}}"#).unwrap_err();
        assert!(err.contains("notes.notes.7.note"), "{err}");
    }
}
