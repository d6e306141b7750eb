//! The protobuf JSON mapping of `arista.event.v1` events, hand-written.
//!
//! The writer runs once per event on the hot path (hundreds of thousands of
//! events per second), so it appends straight into a caller-owned buffer
//! instead of building a `serde_json::Value` or going through reflection.
//! The reader is used for scripts and recordings, where clarity of error
//! messages matters more than speed, so it walks a `serde_json::Value`.
//!
//! Output follows the canonical protobuf JSON mapping: lowerCamelCase names,
//! fields in field-number order, proto3 defaults omitted, enums by name
//! (numbers for values this proto does not name), wrappers as bare values,
//! `int64` map keys as strings and timestamps as RFC 3339 in UTC.

use std::collections::BTreeMap;

use prost_types::Timestamp;
use serde_json::{Map, Value};

use crate::arista::time::TimeBounds;
use crate::event::{
    ComponentType, Event, EventAck, EventComponent, EventComponents, EventData, EventKey,
    EventMetadata, EventMetadataGroup, EventNote, EventNotes, EventRead, EventSeverity,
    EventStreamResponse,
};
use crate::fmp::MapStringString;
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

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

/// Parses one JSON line holding an `EventStreamResponse`.
///
/// Accepts lowerCamelCase and original snake_case names, enums by name or
/// number, `null` as "not set", and ignores unknown fields, as the protobuf
/// JSON mapping requires of parsers.
pub fn parse_stream_response(line: &str) -> Result<EventStreamResponse, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = as_obj(&v, "")?;
    let mut resp = EventStreamResponse::default();
    for (name, val) in obj {
        if val.is_null() {
            continue;
        }
        match name.as_str() {
            "value" => resp.value = Some(parse_event(val, "value")?),
            "time" => resp.time = Some(parse_ts(val, "time")?),
            "type" => {
                resp.r#type = parse_enum(val, "type", |s| {
                    Operation::from_str_name(s).map(|o| o as i32)
                })?
            }
            _ => {}
        }
    }
    Ok(resp)
}

/// Parses the protobuf JSON form of one `Event` (as written by [`write_event`]).
pub fn parse_event_json(text: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    parse_event(&v, "")
}

/// Parses an RFC 3339 timestamp such as `2026-11-20T09:14:03.125Z`.
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = &b[r];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |a, &c| a * 10 + (c - b'0') as i64))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) as i64 {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(start..i)? * 10i64.pow((9 - digits) as u32);
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "top level".to_string()
    } else {
        path.to_string()
    }
}

fn as_obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("expected an object at {}, got {}", at(path), kind(v)))
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

/// Iterates the set fields of an object (skipping `null`s), with their paths.
fn fields<'a>(
    v: &'a Value,
    path: &str,
) -> Result<impl Iterator<Item = (&'a str, &'a Value)>, String> {
    Ok(as_obj(v, path)?
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.as_str(), v)))
}

fn parse_string(v: &Value, path: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a string at {path}, got {}", kind(v)))
}

fn parse_bool(v: &Value, path: &str) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected a boolean at {path}, got {}", kind(v)))
}

fn parse_ts(v: &Value, path: &str) -> Result<Timestamp, String> {
    match v {
        Value::String(s) => {
            parse_timestamp(s).ok_or_else(|| format!("bad timestamp {v} at {path}"))
        }
        _ => Err(format!(
            "bad timestamp {v} at {path}: expected an RFC 3339 string"
        )),
    }
}

/// An enum given by name (looked up with `by_name`) or by number.
fn parse_enum(v: &Value, path: &str, by_name: impl Fn(&str) -> Option<i32>) -> Result<i32, String> {
    match v {
        Value::String(s) => by_name(s).ok_or_else(|| format!("unknown enum value {v} at {path}")),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| format!("enum number {n} out of range at {path}")),
        _ => Err(format!(
            "expected an enum name or number at {path}, got {}",
            kind(v)
        )),
    }
}

fn parse_str_map(v: &Value, path: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, val) in as_obj(v, path)? {
        map.insert(k.clone(), parse_string(val, &join(path, k))?);
    }
    Ok(map)
}

fn parse_key(v: &Value, path: &str) -> Result<EventKey, String> {
    let mut key = EventKey::default();
    for (name, val) in fields(v, path)? {
        let p = join(path, name);
        match name {
            "key" => key.key = Some(parse_string(val, &p)?),
            "timestamp" => key.timestamp = Some(parse_ts(val, &p)?),
            _ => {}
        }
    }
    Ok(key)
}

fn parse_event(v: &Value, path: &str) -> Result<Event, String> {
    let mut ev = Event::default();
    for (name, val) in fields(v, path)? {
        let p = join(path, name);
        match name {
            "key" => ev.key = Some(parse_key(val, &p)?),
            "severity" => {
                ev.severity = parse_enum(val, &p, |s| {
                    EventSeverity::from_str_name(s).map(|e| e as i32)
                })?
            }
            "title" => ev.title = Some(parse_string(val, &p)?),
            "description" => ev.description = Some(parse_string(val, &p)?),
            "eventType" | "event_type" => ev.event_type = Some(parse_string(val, &p)?),
            "data" => {
                let mut data = EventData::default();
                for (n, dv) in fields(val, &p)? {
                    if n == "data" {
                        data.data = parse_str_map(dv, &join(&p, n))?;
                    }
                }
                ev.data = Some(data);
            }
            "components" => ev.components = Some(parse_components(val, &p)?),
            "ack" => {
                let mut ack = EventAck::default();
                for (n, av) in fields(val, &p)? {
                    let ap = join(&p, n);
                    match n {
                        "ack" => ack.ack = Some(parse_bool(av, &ap)?),
                        "acker" => ack.acker = Some(parse_string(av, &ap)?),
                        "ackTime" | "ack_time" => ack.ack_time = Some(parse_ts(av, &ap)?),
                        _ => {}
                    }
                }
                ev.ack = Some(ack);
            }
            "notes" => ev.notes = Some(parse_notes(val, &p)?),
            "lastUpdatedTime" | "last_updated_time" => {
                ev.last_updated_time = Some(parse_ts(val, &p)?)
            }
            "read" => {
                let mut read = EventRead::default();
                for (n, rv) in fields(val, &p)? {
                    let rp = join(&p, n);
                    match n {
                        "read" => read.read = Some(parse_bool(rv, &rp)?),
                        "reader" => read.reader = Some(parse_string(rv, &rp)?),
                        "readTime" | "read_time" => read.read_time = Some(parse_ts(rv, &rp)?),
                        _ => {}
                    }
                }
                ev.read = Some(read);
            }
            "ruleId" | "rule_id" => ev.rule_id = Some(parse_string(val, &p)?),
            "deleteTime" | "delete_time" => ev.delete_time = Some(parse_ts(val, &p)?),
            "metadata" => ev.metadata = Some(parse_metadata(val, &p)?),
            _ => {}
        }
    }
    Ok(ev)
}

fn parse_components(v: &Value, path: &str) -> Result<EventComponents, String> {
    let mut comps = EventComponents::default();
    for (name, val) in fields(v, path)? {
        if name != "components" {
            continue;
        }
        let p = join(path, name);
        let arr = val
            .as_array()
            .ok_or_else(|| format!("expected an array at {p}, got {}", kind(val)))?;
        for (i, item) in arr.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            let mut c = EventComponent::default();
            for (n, cv) in fields(item, &ip)? {
                let cp = join(&ip, n);
                match n {
                    "type" => {
                        c.r#type = parse_enum(cv, &cp, |s| {
                            ComponentType::from_str_name(s).map(|t| t as i32)
                        })?
                    }
                    "components" => c.components = parse_str_map(cv, &cp)?,
                    _ => {}
                }
            }
            comps.components.push(c);
        }
    }
    Ok(comps)
}

/// `{"values":[{"values":{"values":{"k":"v"}}}]}`: groups of tag pairs,
/// each group an `fmp.MapStringString`.
fn parse_metadata(v: &Value, path: &str) -> Result<EventMetadata, String> {
    let mut meta = EventMetadata::default();
    for (name, val) in fields(v, path)? {
        if name != "values" {
            continue;
        }
        let p = join(path, name);
        let arr = val
            .as_array()
            .ok_or_else(|| format!("expected an array at {p}, got {}", kind(val)))?;
        for (i, item) in arr.iter().enumerate() {
            let gp = format!("{p}[{i}]");
            let mut group = EventMetadataGroup::default();
            for (n, mv) in fields(item, &gp)? {
                if n != "values" {
                    continue;
                }
                let mp = join(&gp, n);
                let mut map = MapStringString::default();
                for (n2, inner) in fields(mv, &mp)? {
                    if n2 == "values" {
                        map.values = parse_str_map(inner, &join(&mp, n2))?;
                    }
                }
                group.values = Some(map);
            }
            meta.values.push(group);
        }
    }
    Ok(meta)
}

fn parse_notes(v: &Value, path: &str) -> Result<EventNotes, String> {
    let mut notes = EventNotes::default();
    for (name, val) in fields(v, path)? {
        if name != "notes" {
            continue;
        }
        let p = join(path, name);
        for (k, nv) in as_obj(val, &p)? {
            let np = join(&p, k);
            let key: i64 = k
                .parse()
                .map_err(|_| format!("bad int64 map key \"{k}\" at {p}"))?;
            let mut note = EventNote::default();
            for (n, fv) in fields(nv, &np)? {
                let fp = join(&np, n);
                match n {
                    "note" => note.note = Some(parse_string(fv, &fp)?),
                    "noteCreator" | "note_creator" => {
                        note.note_creator = Some(parse_string(fv, &fp)?)
                    }
                    _ => {}
                }
            }
            notes.notes.insert(key, note);
        }
    }
    Ok(notes)
}

/// Parses `{"start":..,"end":..}` time bounds (used by tools building requests).
pub fn parse_time_bounds(text: &str) -> Result<TimeBounds, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut tb = TimeBounds::default();
    for (name, val) in fields(&v, "")? {
        match name {
            "start" => tb.start = Some(parse_ts(val, name)?),
            "end" => tb.end = Some(parse_ts(val, name)?),
            _ => {}
        }
    }
    Ok(tb)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
