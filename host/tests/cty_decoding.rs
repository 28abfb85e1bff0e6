//! Decoding of go-cty msgpack configuration (`config::cty`), the encoding
//! Nomad uses for SetConfig and StartTask payloads.
//!
//! Every payload here is hand-encoded msgpack built byte by byte with the
//! small helpers below (no msgpack library), so each test states exactly what
//! is on the wire. Covered: every integer, float and string encoding; numeric
//! strings; nil and missing keys taking defaults; array and map headers of
//! every width; `list(map(T))` merging; rejection of unknown values;
//! strictness (unknown keys, wrong types, with the failing key path);
//! malformed and hostile input (never a panic, never a huge allocation); a
//! deterministic robustness sweep; and `encode_json`, the inverse used by the
//! dev client.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use wasmdock_host::config::cty::{decode, encode_json};
use wasmdock_host::config::policy::{FailurePolicy, Hook};
use wasmdock_host::config::{ConfigError, PluginConfig};

// ---------------------------------------------------------------------------
// Hand encoders

const NIL: u8 = 0xc0;
const FALSE: u8 = 0xc2;
const TRUE: u8 = 0xc3;

/// A str of 0..=31 bytes: `0xa0 | len`.
fn fixstr(s: &str) -> Vec<u8> {
    assert!(s.len() < 32, "fixstr holds at most 31 bytes");
    let mut out = vec![0xa0 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// `0xd9 len8 bytes`.
fn str8(s: &str) -> Vec<u8> {
    let len = u8::try_from(s.len()).expect("str8 holds at most 255 bytes");
    let mut out = vec![0xd9, len];
    out.extend_from_slice(s.as_bytes());
    out
}

/// `0xda len16 bytes`.
fn str16(s: &str) -> Vec<u8> {
    let len = u16::try_from(s.len()).expect("str16 holds at most 65535 bytes");
    let mut out = vec![0xda];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// `0xdb len32 bytes`.
fn str32(s: &str) -> Vec<u8> {
    let len = u32::try_from(s.len()).expect("str32 holds at most 4 GiB");
    let mut out = vec![0xdb];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// A fixmap (at most 15 entries) with fixstr keys.
fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    assert!(entries.len() < 16, "fixmap holds at most 15 entries");
    let mut out = vec![0x80 | entries.len() as u8];
    for (key, value) in entries {
        out.extend_from_slice(&fixstr(key));
        out.extend_from_slice(value);
    }
    out
}

/// A fixarray (at most 15 items).
fn array(items: &[Vec<u8>]) -> Vec<u8> {
    assert!(items.len() < 16, "fixarray holds at most 15 items");
    let mut out = vec![0x90 | items.len() as u8];
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// Concatenates byte pieces.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The error `decode::<T>` returns for `bytes`; fails the test if it decodes.
fn decode_err<T: DeserializeOwned + Debug>(bytes: &[u8]) -> ConfigError {
    match decode::<T>(bytes) {
        Ok(value) => panic!("expected an error for {bytes:02x?}, decoded {value:?}"),
        Err(err) => err,
    }
}

/// The error `PluginConfig::from_msgpack` returns; fails the test if it decodes.
fn plugin_err(bytes: &[u8]) -> ConfigError {
    match PluginConfig::from_msgpack(bytes) {
        Ok(value) => panic!("expected an error for {bytes:02x?}, decoded {value:?}"),
        Err(err) => err,
    }
}

/// Asserts the error's key exactly and that its message contains each needle.
fn assert_error(err: &ConfigError, key: &str, needles: &[&str]) {
    assert_eq!(err.key, key, "key of {err:?}");
    for needle in needles {
        assert!(
            err.message.contains(needle),
            "message {:?} should contain {needle:?}",
            err.message
        );
    }
}

// ---------------------------------------------------------------------------
// Local decode targets

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Numbers {
    i: i64,
    u: u64,
    small: u8,
    f: f64,
}

#[derive(Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct WithDefaults {
    count: i64,
    name: String,
    enabled: bool,
    tags: Vec<String>,
}

impl Default for WithDefaults {
    fn default() -> Self {
        Self {
            count: 5,
            name: "nvidia".to_owned(),
            enabled: true,
            tags: vec!["a".to_owned()],
        }
    }
}

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Text {
    s: String,
}

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Lists {
    items: Vec<u64>,
    names: Vec<String>,
}

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Labels {
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Inner {
    flag: bool,
    name: String,
}

#[derive(Deserialize, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
struct Outer {
    inner: Inner,
    list: Vec<Inner>,
    name: String,
}

/// Decodes `{field: value}` into [`Numbers`].
fn number_field(field: &str, value: &[u8]) -> Result<Numbers, ConfigError> {
    decode(&map(&[(field, value.to_vec())]))
}

// ---------------------------------------------------------------------------
// 1. Integers

#[test]
fn positive_integer_encodings_decode_into_i64_and_u64() {
    let cases: [(&[u8], u64); 10] = [
        (&[0x00], 0),
        (&[0x2a], 42),
        (&[0x7f], 127),
        (&[0xcc, 0x80], 128),
        (&[0xcc, 0xff], 255),
        (&[0xcd, 0x01, 0x00], 256),
        (&[0xcd, 0xff, 0xff], 65_535),
        (&[0xce, 0x00, 0x01, 0x00, 0x00], 65_536),
        (&[0xce, 0xff, 0xff, 0xff, 0xff], 4_294_967_295),
        (
            &[0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
            4_294_967_296,
        ),
    ];
    for (bytes, expected) in cases {
        let as_u = number_field("u", bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
        assert_eq!(as_u.u, expected, "{bytes:02x?} into u64");
        let as_i = number_field("i", bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
        assert_eq!(
            as_i.i,
            i64::try_from(expected).unwrap(),
            "{bytes:02x?} into i64"
        );
    }
}

#[test]
fn negative_integer_encodings_decode_into_i64() {
    let cases: [(&[u8], i64); 10] = [
        (&[0xff], -1),
        (&[0xe0], -32),
        (&[0xd0, 0xdf], -33),
        (&[0xd0, 0x80], -128),
        (&[0xd1, 0xff, 0x7f], -129),
        (&[0xd1, 0x80, 0x00], -32_768),
        (&[0xd2, 0xff, 0xff, 0x7f, 0xff], -32_769),
        (&[0xd2, 0x80, 0x00, 0x00, 0x00], -2_147_483_648),
        (
            &[0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
            -2_147_483_649,
        ),
        // Signed encodings of non-negative values are legal msgpack too.
        (&[0xd0, 0x05], 5),
    ];
    for (bytes, expected) in cases {
        let decoded = number_field("i", bytes).unwrap_or_else(|e| panic!("{bytes:02x?}: {e}"));
        assert_eq!(decoded.i, expected, "{bytes:02x?} into i64");
    }
}

#[test]
fn u64_max_decodes_into_u64() {
    let bytes = [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(number_field("u", &bytes).unwrap().u, u64::MAX);
}

#[test]
fn i64_max_and_min_decode_into_i64() {
    let max = [0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(number_field("i", &max).unwrap().i, i64::MAX);
    let min = [0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    assert_eq!(number_field("i", &min).unwrap().i, i64::MIN);
}

#[test]
fn integer_out_of_range_is_an_error_naming_the_field() {
    let u64_max = [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let err = number_field("i", &u64_max).unwrap_err();
    assert_error(&err, "i", &["18446744073709551615", "out of range"]);

    let i64_min = [0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    let err = number_field("u", &i64_min).unwrap_err();
    assert_error(&err, "u", &["-9223372036854775808", "out of range"]);

    let err = number_field("u", &[0xff]).unwrap_err();
    assert_error(&err, "u", &["-1", "out of range"]);

    let err = number_field("small", &[0xcd, 0x01, 0x00]).unwrap_err();
    assert_error(&err, "small", &["256", "out of range", "0 to 255"]);

    // The path reaches into nested structures.
    let nested = map(&[("outer", map(&[("u", vec![0xff])]))]);
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(rename = "outer")]
        _outer: Numbers,
    }
    let err = decode_err::<Wrapper>(&nested);
    assert_error(&err, "outer.u", &["out of range"]);
    assert_eq!(err.to_string(), format!("outer.u: {}", err.message));
}

// ---------------------------------------------------------------------------
// 2. Floats

fn float64(f: f64) -> Vec<u8> {
    cat(&[&[0xcb], &f.to_be_bytes()])
}

#[test]
fn float64_decodes_into_f64() {
    assert_eq!(number_field("f", &float64(1.5)).unwrap().f, 1.5);
    assert_eq!(number_field("f", &float64(-2.25)).unwrap().f, -2.25);
    // Spelled out, so the encoding is explicit: 1.5 = 0x3ff8000000000000.
    let explicit = [0xcb, 0x3f, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    assert_eq!(number_field("f", &explicit).unwrap().f, 1.5);
    // go-cty writes ±Inf as float64.
    assert_eq!(
        number_field("f", &float64(f64::INFINITY)).unwrap().f,
        f64::INFINITY
    );
}

#[test]
fn float32_is_accepted_into_f64() {
    // 1.5f32 = 0x3fc00000
    let bytes = [0xca, 0x3f, 0xc0, 0x00, 0x00];
    assert_eq!(number_field("f", &bytes).unwrap().f, 1.5);
}

#[test]
fn integer_encodings_decode_into_f64() {
    assert_eq!(number_field("f", &[0x07]).unwrap().f, 7.0);
    assert_eq!(number_field("f", &[0xd0, 0x80]).unwrap().f, -128.0);
}

#[test]
fn integral_float64_decodes_into_i64() {
    assert_eq!(number_field("i", &float64(5.0)).unwrap().i, 5);
    assert_eq!(number_field("i", &float64(-3.0)).unwrap().i, -3);
    assert_eq!(number_field("u", &float64(5.0)).unwrap().u, 5);
}

#[test]
fn non_integral_float_into_i64_is_an_error_naming_the_field() {
    let err = number_field("i", &float64(1.5)).unwrap_err();
    assert_error(&err, "i", &["expected an integer", "1.5"]);
    let err = number_field("u", &[0xca, 0x3f, 0xc0, 0x00, 0x00]).unwrap_err();
    assert_error(&err, "u", &["expected an integer"]);
    let err = number_field("i", &float64(f64::NAN)).unwrap_err();
    assert_error(&err, "i", &["expected an integer"]);
    // An integral float too large for i64 is out of range, not wrapped.
    let err = number_field("i", &float64(1e19)).unwrap_err();
    assert_error(&err, "i", &["out of range"]);
}

// ---------------------------------------------------------------------------
// 3. Numeric strings

#[test]
fn decimal_string_decodes_into_f64() {
    assert_eq!(number_field("f", &fixstr("0.1")).unwrap().f, 0.1);
    assert_eq!(number_field("f", &fixstr("-2.5")).unwrap().f, -2.5);
    assert_eq!(number_field("f", &fixstr("12")).unwrap().f, 12.0);
}

#[test]
fn big_integer_string_decodes_into_u64() {
    let bytes = fixstr("18446744073709551615");
    assert_eq!(number_field("u", &bytes).unwrap().u, u64::MAX);
}

#[test]
fn negative_integer_string_decodes_into_i64() {
    assert_eq!(number_field("i", &fixstr("-12")).unwrap().i, -12);
}

#[test]
fn integer_string_beyond_u64_is_out_of_range() {
    let err = number_field("u", &fixstr("18446744073709551616")).unwrap_err();
    assert_error(&err, "u", &["out of range"]);
}

#[test]
fn non_numeric_string_into_number_field_is_an_error_naming_the_field() {
    let err = number_field("i", &fixstr("ten")).unwrap_err();
    assert_error(&err, "i", &["expected a number", "\"ten\""]);
    let err = number_field("f", &fixstr("abc")).unwrap_err();
    assert_error(&err, "f", &["expected a number", "\"abc\""]);
    let err = number_field("u", &fixstr("")).unwrap_err();
    assert_error(&err, "u", &["expected a number"]);
    let err = number_field("f", &fixstr("NaN")).unwrap_err();
    assert_error(&err, "f", &["expected a number"]);
}

#[test]
fn fractional_string_into_integer_field_is_an_error_naming_the_field() {
    let err = number_field("i", &fixstr("0.5")).unwrap_err();
    assert_error(&err, "i", &["expected an integer", "0.5"]);
}

#[test]
fn bool_into_number_field_is_an_error_naming_the_field() {
    let err = number_field("i", &[TRUE]).unwrap_err();
    assert_error(&err, "i", &["expected an integer", "bool"]);
    let err = number_field("f", &[FALSE]).unwrap_err();
    assert_error(&err, "f", &["expected a number", "bool"]);
}

// ---------------------------------------------------------------------------
// 4. Nil, empty and missing

#[test]
fn nil_at_top_level_decodes_to_default() {
    assert_eq!(decode::<WithDefaults>(&[NIL]), Ok(WithDefaults::default()));
    assert_eq!(decode::<Numbers>(&[NIL]), Ok(Numbers::default()));
}

#[test]
fn empty_payload_decodes_to_default() {
    assert_eq!(decode::<WithDefaults>(&[]), Ok(WithDefaults::default()));
    assert_eq!(decode::<Outer>(&[]), Ok(Outer::default()));
}

#[test]
fn empty_map_decodes_to_default() {
    assert_eq!(decode::<WithDefaults>(&[0x80]), Ok(WithDefaults::default()));
}

#[test]
fn nil_valued_keys_take_the_field_default() {
    let bytes = map(&[
        ("count", vec![NIL]),
        ("enabled", vec![NIL]),
        ("name", vec![NIL]),
        ("tags", vec![NIL]),
    ]);
    assert_eq!(decode::<WithDefaults>(&bytes), Ok(WithDefaults::default()));
}

#[test]
fn missing_keys_take_the_field_default() {
    let bytes = map(&[("count", vec![0x09])]);
    assert_eq!(
        decode::<WithDefaults>(&bytes),
        Ok(WithDefaults {
            count: 9,
            ..WithDefaults::default()
        })
    );
}

#[test]
fn plugin_config_nil_and_missing_keys_take_nomad_defaults() {
    let nil_keys = map(&[
        ("container_exists_attempts", vec![NIL]),
        ("gc", vec![NIL]),
        ("logging", vec![NIL]),
        ("nvidia_runtime", vec![NIL]),
    ]);
    let config = PluginConfig::from_msgpack(&nil_keys).unwrap();
    assert_eq!(config.nvidia_runtime, "nvidia");
    assert_eq!(config.container_exists_attempts, 5);
    assert_eq!(config, PluginConfig::default());

    let missing = map(&[("endpoint", fixstr("unix:///d.sock"))]);
    let config = PluginConfig::from_msgpack(&missing).unwrap();
    assert_eq!(config.endpoint, "unix:///d.sock");
    assert_eq!(config.nvidia_runtime, "nvidia");
    assert_eq!(config.container_exists_attempts, 5);

    // A nested nil takes the nested default, siblings keep their values.
    let nested = map(&[(
        "gc",
        map(&[("image", vec![FALSE]), ("image_delay", vec![NIL])]),
    )]);
    let config = PluginConfig::from_msgpack(&nested).unwrap();
    assert!(!config.gc.image);
    assert_eq!(config.gc.image_delay.get(), Duration::from_secs(180));
    assert!(config.gc.container);
}

#[test]
fn empty_payload_plugin_config_equals_default_with_nomad_defaults() {
    let config = PluginConfig::from_msgpack(&[]).unwrap();
    assert_eq!(config, PluginConfig::default());
    assert_eq!(PluginConfig::from_msgpack(&[NIL]).unwrap(), config);

    assert!(config.gc.image);
    assert_eq!(config.gc.image_delay.get(), Duration::from_secs(3 * 60));
    assert!(config.gc.container);
    let dangling = &config.gc.dangling_containers;
    assert!(dangling.enabled);
    assert_eq!(dangling.period.get(), Duration::from_secs(5 * 60));
    assert_eq!(dangling.creation_grace.get(), Duration::from_secs(5 * 60));
    assert!(!dangling.dry_run);
    assert_eq!(config.allow_runtimes, ["runc", "nvidia"]);
    assert_eq!(config.nvidia_runtime, "nvidia");
    assert_eq!(config.logging.r#type, "json-file");
    assert_eq!(
        config.logging.config,
        BTreeMap::from([
            ("max-file".to_owned(), "2".to_owned()),
            ("max-size".to_owned(), "2m".to_owned()),
        ])
    );
    assert_eq!(config.pull_activity_timeout.get(), Duration::from_secs(120));
    assert_eq!(config.image_pull_timeout.get(), Duration::from_secs(300));
    assert_eq!(
        config.infra_image_pull_timeout.get(),
        Duration::from_secs(300)
    );
    assert_eq!(config.container_exists_attempts, 5);
    assert!(!config.allow_privileged);
    assert!(config.allow_caps.iter().any(|c| c == "CHOWN"));
    assert!(!config.allow_caps.iter().any(|c| c == "NET_RAW"));
    assert!(config.policy.module.is_empty());
}

// ---------------------------------------------------------------------------
// 5. Strings

#[test]
fn fixstr_decodes() {
    assert_eq!(
        decode::<Text>(&map(&[("s", fixstr("abc"))])).unwrap().s,
        "abc"
    );
    assert_eq!(decode::<Text>(&map(&[("s", vec![0xa0])])).unwrap().s, "");
    let longest = "x".repeat(31);
    assert_eq!(
        decode::<Text>(&map(&[("s", fixstr(&longest))])).unwrap().s,
        longest
    );
}

#[test]
fn str8_decodes() {
    let value = "y".repeat(200);
    assert_eq!(
        decode::<Text>(&map(&[("s", str8(&value))])).unwrap().s,
        value
    );
    // A short string in a wide encoding is legal.
    assert_eq!(decode::<Text>(&map(&[("s", str8("ab"))])).unwrap().s, "ab");
}

#[test]
fn str16_decodes() {
    let value = "z".repeat(300);
    assert_eq!(
        decode::<Text>(&map(&[("s", str16(&value))])).unwrap().s,
        value
    );
}

#[test]
fn str32_decodes_a_70000_byte_string() {
    let value: String = (0..70_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let bytes = map(&[("s", str32(&value))]);
    assert_eq!(&bytes[3..8], &[0xdb, 0x00, 0x01, 0x11, 0x70]);
    assert_eq!(decode::<Text>(&bytes).unwrap().s, value);
}

#[test]
fn str32_with_a_small_length_decodes() {
    assert_eq!(
        decode::<Text>(&map(&[("s", str32("héllo"))])).unwrap().s,
        "héllo"
    );
}

#[test]
fn bin_family_is_accepted_as_a_utf8_string() {
    let bin8 = map(&[("s", vec![0xc4, 0x03, b'a', b'b', b'c'])]);
    assert_eq!(decode::<Text>(&bin8).unwrap().s, "abc");
    let bin16 = map(&[("s", vec![0xc5, 0x00, 0x02, b'o', b'k'])]);
    assert_eq!(decode::<Text>(&bin16).unwrap().s, "ok");
    let bin32 = map(&[("s", vec![0xc6, 0x00, 0x00, 0x00, 0x01, b'!'])]);
    assert_eq!(decode::<Text>(&bin32).unwrap().s, "!");
    // Binary that is not UTF-8 is malformed for a string.
    let err = decode_err::<Text>(&map(&[("s", vec![0xc4, 0x01, 0xff])]));
    assert_error(&err, "", &["not valid UTF-8"]);
}

#[test]
fn string_keys_may_use_any_string_encoding() {
    let mut bytes = vec![0x82];
    bytes.extend(str8("i"));
    bytes.push(0x01);
    bytes.extend(str16("u"));
    bytes.push(0x02);
    let decoded = decode::<Numbers>(&bytes).unwrap();
    assert_eq!((decoded.i, decoded.u), (1, 2));
}

#[test]
fn number_into_string_field_is_an_error_naming_the_field() {
    let err = decode_err::<Text>(&map(&[("s", vec![0x05])]));
    assert_error(&err, "s", &["expected a string", "the number 5"]);
}

// ---------------------------------------------------------------------------
// 6. Arrays and maps of every width

#[test]
fn fixarray_decodes() {
    let bytes = map(&[("items", vec![0x93, 0x01, 0x02, 0x03])]);
    assert_eq!(decode::<Lists>(&bytes).unwrap().items, [1, 2, 3]);
    let empty = map(&[("items", vec![0x90])]);
    assert!(decode::<Lists>(&empty).unwrap().items.is_empty());
}

#[test]
fn array16_with_20_items_decodes() {
    let mut value = vec![0xdc, 0x00, 0x14];
    value.extend(0..20u8);
    let decoded = decode::<Lists>(&map(&[("items", value)])).unwrap();
    assert_eq!(decoded.items, (0..20).collect::<Vec<u64>>());
}

#[test]
fn array32_with_a_small_count_decodes() {
    let mut value = vec![0xdd, 0x00, 0x00, 0x00, 0x02];
    value.extend(fixstr("a"));
    value.extend(str8("b"));
    let decoded = decode::<Lists>(&map(&[("names", value)])).unwrap();
    assert_eq!(decoded.names, ["a", "b"]);
}

#[test]
fn fixmap_decodes_into_a_struct() {
    let bytes = map(&[
        ("f", float64(0.5)),
        ("i", vec![0xff]),
        ("small", vec![0x07]),
        ("u", vec![0xcc, 0xc8]),
    ]);
    assert_eq!(
        decode::<Numbers>(&bytes),
        Ok(Numbers {
            i: -1,
            u: 200,
            small: 7,
            f: 0.5
        })
    );
}

#[test]
fn map16_with_20_entries_decodes() {
    let mut value = vec![0xde, 0x00, 0x14];
    let mut expected = BTreeMap::new();
    for n in 0..20 {
        let key = format!("k{n:02}");
        let val = format!("v{n}");
        value.extend(fixstr(&key));
        value.extend(fixstr(&val));
        expected.insert(key, val);
    }
    let decoded = decode::<Labels>(&map(&[("labels", value)])).unwrap();
    assert_eq!(decoded.labels, expected);
}

#[test]
fn map16_and_map32_with_small_counts_decode_into_structs() {
    let mut map16 = vec![0xde, 0x00, 0x01];
    map16.extend(fixstr("u"));
    map16.push(0x03);
    assert_eq!(decode::<Numbers>(&map16).unwrap().u, 3);

    let mut map32 = vec![0xdf, 0x00, 0x00, 0x00, 0x02];
    map32.extend(fixstr("i"));
    map32.push(0xfe);
    map32.extend(fixstr("u"));
    map32.push(0x04);
    let decoded = decode::<Numbers>(&map32).unwrap();
    assert_eq!((decoded.i, decoded.u), (-2, 4));
}

#[test]
fn nested_structs_and_lists_of_structs_decode() {
    let bytes = map(&[
        (
            "inner",
            map(&[("flag", vec![TRUE]), ("name", fixstr("in"))]),
        ),
        (
            "list",
            array(&[
                map(&[("name", fixstr("first"))]),
                map(&[("flag", vec![TRUE])]),
            ]),
        ),
        ("name", fixstr("out")),
    ]);
    assert_eq!(
        decode::<Outer>(&bytes),
        Ok(Outer {
            inner: Inner {
                flag: true,
                name: "in".to_owned()
            },
            list: vec![
                Inner {
                    flag: false,
                    name: "first".to_owned()
                },
                Inner {
                    flag: true,
                    name: String::new()
                },
            ],
            name: "out".to_owned(),
        })
    );
}

// ---------------------------------------------------------------------------
// 7. list(map(T)) merging

fn labels(value: Vec<u8>) -> Result<Labels, ConfigError> {
    decode(&map(&[("labels", value)]))
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn list_of_maps_is_merged_with_later_keys_winning() {
    let value = array(&[
        map(&[("a", fixstr("1"))]),
        map(&[("b", fixstr("2"))]),
        map(&[("a", fixstr("3"))]),
    ]);
    assert_eq!(
        labels(value).unwrap().labels,
        string_map(&[("a", "3"), ("b", "2")])
    );
}

#[test]
fn plain_map_decodes_into_a_map_field() {
    let value = map(&[("a", fixstr("1")), ("b", fixstr("2"))]);
    assert_eq!(
        labels(value).unwrap().labels,
        string_map(&[("a", "1"), ("b", "2")])
    );
}

#[test]
fn nil_element_in_a_list_of_maps_is_skipped() {
    let value = array(&[
        map(&[("a", fixstr("1"))]),
        vec![NIL],
        map(&[("b", fixstr("2"))]),
    ]);
    assert_eq!(
        labels(value).unwrap().labels,
        string_map(&[("a", "1"), ("b", "2")])
    );
}

#[test]
fn empty_and_nil_list_of_maps_decode_to_an_empty_map() {
    assert!(labels(vec![0x90]).unwrap().labels.is_empty());
    assert!(labels(vec![NIL]).unwrap().labels.is_empty());
    assert!(labels(array(&[vec![NIL]])).unwrap().labels.is_empty());
}

#[test]
fn non_map_element_in_a_list_of_maps_is_an_error_naming_the_field() {
    let value = array(&[map(&[("a", fixstr("1"))]), fixstr("oops")]);
    let err = labels(value).unwrap_err();
    assert_error(&err, "labels", &["list of maps", "item 1 is a string"]);
}

#[test]
fn wrong_value_type_in_a_merged_map_names_the_entry() {
    let value = array(&[map(&[("a", fixstr("1"))]), map(&[("b", vec![0x02])])]);
    let err = labels(value).unwrap_err();
    assert_error(&err, "labels.b", &["expected a string", "the number 2"]);
}

#[test]
fn plugin_policy_module_config_accepts_a_list_of_maps() {
    let module = map(&[
        (
            "config",
            array(&[
                map(&[("allowed", fixstr("a/*"))]),
                map(&[("allowed", fixstr("b/*")), ("mode", fixstr("strict"))]),
            ]),
        ),
        ("name", fixstr("allow")),
        ("path", fixstr("/opt/allow.wasm")),
    ]);
    let bytes = map(&[("policy", map(&[("module", array(&[module]))]))]);
    let config = PluginConfig::from_msgpack(&bytes).unwrap();
    assert_eq!(
        config.policy.module[0].config,
        string_map(&[("allowed", "b/*"), ("mode", "strict")])
    );
}

// ---------------------------------------------------------------------------
// 8. Unknown values

#[test]
fn totally_unknown_value_at_top_level_is_rejected() {
    let err = decode_err::<Numbers>(&[0xd4, 0x00, 0x00]);
    assert_error(&err, "", &["unknown value", "must be known"]);
    let err = plugin_err(&[0xd4, 0x00, 0x00]);
    assert_error(&err, "", &["unknown value", "must be known"]);
}

#[test]
fn totally_unknown_value_as_a_field_is_rejected() {
    let bytes = map(&[("i", vec![0xd4, 0x00, 0x00])]);
    let err = decode_err::<Numbers>(&bytes);
    assert!(err.message.contains("unknown value"), "{err:?}");
    assert!(err.message.contains("must be known"), "{err:?}");

    let bytes = map(&[("endpoint", vec![0xd4, 0x00, 0x00])]);
    let err = plugin_err(&bytes);
    assert_eq!(err.key, "endpoint");
    assert!(err.message.contains("unknown value"), "{err:?}");
    assert!(err.message.contains("must be known"), "{err:?}");
}

#[test]
fn refined_unknown_value_is_rejected() {
    // ext8, 3-byte payload, type 0x0c; payload = {1: false} ("not null").
    let refined = vec![0xc7, 0x03, 0x0c, 0x81, 0x01, FALSE];
    let err = decode_err::<Text>(&map(&[("s", refined.clone())]));
    assert_eq!(
        err.key, "s",
        "the error names the key holding the unknown value"
    );
    assert!(err.message.contains("unknown value"), "{err:?}");
    assert!(err.message.contains("must be known"), "{err:?}");

    // A string-prefix refinement ({2: "ab"}) nested inside a list.
    let prefix = vec![0xc7, 0x05, 0x0c, 0x81, 0x02, 0xa2, b'a', b'b'];
    let err = decode_err::<Lists>(&map(&[("names", array(&[fixstr("x"), prefix]))]));
    assert!(err.message.contains("unknown value"), "{err:?}");
    assert!(err.message.contains("must be known"), "{err:?}");

    let err = plugin_err(&refined);
    assert_error(&err, "", &["unknown value", "must be known"]);
}

#[test]
fn other_extension_types_are_rejected() {
    for bytes in [
        vec![0xd5, 0x05, 0x00, 0x00],
        vec![0xd8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![0xc8, 0x00, 0x01, 0x07, 0x00],
        vec![0xc9, 0x00, 0x00, 0x00, 0x01, 0x07, 0x00],
    ] {
        let err = decode_err::<Numbers>(&bytes);
        assert_error(&err, "", &["extension", "must be known"]);
    }
}

// ---------------------------------------------------------------------------
// 9. Strictness

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let err = decode_err::<Numbers>(&map(&[("bogus", vec![0x01])]));
    assert_error(&err, "bogus", &["unknown field", "bogus"]);
}

#[test]
fn nested_unknown_key_is_an_error_naming_its_path() {
    let bytes = map(&[("inner", map(&[("nope", vec![TRUE])]))]);
    let err = decode_err::<Outer>(&bytes);
    assert_error(&err, "inner.nope", &["unknown field"]);

    let bytes = map(&[("list", array(&[vec![0x80], map(&[("x", vec![0x01])])]))]);
    let err = decode_err::<Outer>(&bytes);
    assert_error(&err, "list[1].x", &["unknown field"]);

    let err = plugin_err(&map(&[("gc", map(&[("imag", vec![TRUE])]))]));
    assert_error(&err, "gc.imag", &["unknown field"]);
    assert_eq!(err.to_string(), format!("gc.imag: {}", err.message));
}

#[test]
fn string_where_bool_expected_names_the_path() {
    let err = plugin_err(&map(&[("gc", map(&[("image", fixstr("yes"))]))]));
    assert_error(&err, "gc.image", &["expected a bool", "\"yes\""]);

    let bytes = map(&[(
        "gc",
        map(&[("dangling_containers", map(&[("dry_run", fixstr("true"))]))]),
    )]);
    let err = plugin_err(&bytes);
    assert_error(&err, "gc.dangling_containers.dry_run", &["expected a bool"]);
}

#[test]
fn list_where_string_expected_names_the_path() {
    let err = plugin_err(&map(&[("endpoint", array(&[fixstr("a")]))]));
    assert_error(&err, "endpoint", &["expected a string", "a list"]);
    let err = decode_err::<Outer>(&map(&[("inner", map(&[("name", array(&[]))]))]));
    assert_error(&err, "inner.name", &["expected a string", "a list"]);
}

#[test]
fn map_where_list_expected_names_the_path() {
    let module = map(&[
        ("hooks", map(&[("a", fixstr("b"))])),
        ("name", fixstr("m")),
        ("path", fixstr("/m.wasm")),
    ]);
    let bytes = map(&[("policy", map(&[("module", array(&[module]))]))]);
    let err = plugin_err(&bytes);
    assert_error(
        &err,
        "policy.module[0].hooks",
        &["expected a list", "a map"],
    );

    let err = plugin_err(&map(&[("allow_caps", map(&[]))]));
    assert_error(&err, "allow_caps", &["expected a list", "a map"]);
}

#[test]
fn wrong_types_elsewhere_name_the_path() {
    // A number where a duration string is expected.
    let err = plugin_err(&map(&[("gc", map(&[("image_delay", vec![0x05])]))]));
    assert_error(
        &err,
        "gc.image_delay",
        &["expected a string", "the number 5"],
    );

    // A number inside a string map.
    let bytes = map(&[(
        "logging",
        map(&[("config", map(&[("max-file", vec![0x02])]))]),
    )]);
    let err = plugin_err(&bytes);
    assert_error(&err, "logging.config.max-file", &["expected a string"]);

    // A scalar where a block is expected.
    let err = plugin_err(&map(&[("tls", fixstr("on"))]));
    assert_error(&err, "tls", &["expected a block or object"]);

    // A wrong element in a list.
    let err = plugin_err(&map(&[(
        "allow_runtimes",
        array(&[fixstr("runc"), vec![TRUE]]),
    )]));
    assert_error(&err, "allow_runtimes[1]", &["expected a string", "bool"]);

    // A non-map at the top level.
    let err = plugin_err(&fixstr("config"));
    assert_error(&err, "", &["expected a block or object"]);
}

#[test]
fn unknown_enum_variant_names_the_list_element() {
    let module = map(&[
        ("hooks", array(&[fixstr("task-admission"), fixstr("bogus")])),
        ("name", fixstr("m")),
        ("path", fixstr("/m.wasm")),
    ]);
    let bytes = map(&[("policy", map(&[("module", array(&[module]))]))]);
    let err = plugin_err(&bytes);
    assert_error(
        &err,
        "policy.module[0].hooks[1]",
        &["unknown variant", "bogus"],
    );
}

#[test]
fn duplicate_struct_key_is_an_error() {
    let bytes = [0x82, 0xa1, b'i', 0x01, 0xa1, b'i', 0x02];
    let err = decode_err::<Numbers>(&bytes);
    assert!(err.message.contains("duplicate field"), "{err:?}");
}

// ---------------------------------------------------------------------------
// 10. Malformed input

/// Malformed bytes fail with an empty key, for both decode paths.
fn assert_malformed(bytes: &[u8], needle: &str) {
    let err = decode_err::<Numbers>(bytes);
    assert_error(&err, "", &[needle]);
    assert!(!err.to_string().starts_with(':'), "{err}");
    let err = plugin_err(bytes);
    assert_error(&err, "", &[needle]);
}

#[test]
fn truncated_string_is_malformed() {
    assert_malformed(&[0xa5, b'a', b'b'], "truncated");
    assert_malformed(&[0xd9], "truncated");
    assert_malformed(&[0xda, 0x00], "truncated");
    assert_malformed(&[0xdb, 0x00, 0x00, 0x01, 0x00, b'x'], "truncated");
    assert_malformed(&[0x81, 0xa1, b's', 0xa3, b'x'], "truncated");
}

#[test]
fn truncated_array_is_malformed() {
    assert_malformed(&[0x81, 0xa1, b'u', 0x93, 0x01, 0x02], "truncated");
    assert_malformed(&[0xdc, 0x00], "truncated");
    assert_malformed(&[0xdd, 0x00, 0x00, 0x00, 0x01], "truncated");
}

#[test]
fn truncated_map_is_malformed() {
    assert_malformed(&[0x82, 0xa1, b'u', 0x01], "truncated");
    assert_malformed(&[0x81, 0xa1, b'u'], "truncated");
    assert_malformed(&[0xde, 0x00, 0x01], "truncated");
    assert_malformed(&[0xdf, 0x00, 0x00], "truncated");
}

#[test]
fn truncated_numbers_are_malformed() {
    assert_malformed(&[0x81, 0xa1, b'u', 0xcf, 0x00, 0x00], "truncated");
    assert_malformed(&[0xcf], "truncated");
    assert_malformed(&[0xcc], "truncated");
    assert_malformed(
        &[0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        "truncated",
    );
    assert_malformed(&[0xcb, 0x3f, 0xf8], "truncated");
    assert_malformed(&[0xca, 0x3f], "truncated");
}

#[test]
fn trailing_bytes_after_the_value_are_malformed() {
    assert_malformed(&[NIL, 0x00], "trailing bytes");
    assert_malformed(&[0x81, 0xa1, b'u', 0x01, 0xff], "1 trailing bytes");
    assert_malformed(&[0x80, 0x80, 0x80], "2 trailing bytes");
}

#[test]
fn invalid_utf8_string_is_malformed() {
    assert_malformed(&[0x81, 0xa1, b's', 0xa2, 0xff, 0xfe], "not valid UTF-8");
    // A key that is not UTF-8.
    assert_malformed(&[0x81, 0xa2, 0xc3, 0x28, 0x01], "not valid UTF-8");
    // A truncated multi-byte sequence.
    assert_malformed(&[0x81, 0xa1, b's', 0xa1, 0xe2], "not valid UTF-8");
}

#[test]
fn non_string_map_key_is_malformed() {
    assert_malformed(&[0x81, 0x01, 0x02], "map key is a number");
    assert_malformed(&[0x81, NIL, 0x02], "map key is null");
    assert_malformed(&[0x81, 0x90, 0x02], "map key is a list");
    assert_malformed(&[0x81, TRUE, 0x02], "map key is a bool");
}

#[test]
fn reserved_tag_c1_is_malformed() {
    assert_malformed(&[0xc1], "reserved tag 0xc1");
    assert_malformed(&[0x81, 0xa1, b'u', 0xc1], "reserved tag 0xc1");
}

#[test]
fn nesting_1000_levels_deep_is_rejected() {
    let mut bytes = vec![0x91; 1000];
    bytes.push(NIL);
    assert_malformed(&bytes, "nesting deeper than");

    let mut maps = Vec::new();
    for _ in 0..1000 {
        maps.extend_from_slice(&[0x81, 0xa1, b'k']);
    }
    maps.push(NIL);
    assert_malformed(&maps, "nesting deeper than");
}

#[test]
fn moderate_nesting_is_accepted() {
    let mut bytes = vec![0x91; 20];
    bytes.push(0x01);
    assert_eq!(decode::<serde::de::IgnoredAny>(&bytes).map(|_| ()), Ok(()));
}

#[test]
fn array32_claiming_u32_max_items_fails_fast() {
    let start = Instant::now();
    assert_malformed(
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03],
        "truncated",
    );
    assert_malformed(
        &[0x81, 0xa1, b'u', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
        "truncated",
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn map32_claiming_u32_max_entries_fails_fast() {
    let start = Instant::now();
    assert_malformed(&[0xdf, 0xff, 0xff, 0xff, 0xff], "truncated");
    assert_malformed(
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'u', 0x01],
        "truncated",
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn str32_and_bin32_claiming_u32_max_bytes_are_malformed() {
    assert_malformed(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], "truncated");
    assert_malformed(&[0xc6, 0xff, 0xff, 0xff, 0xff, b'a'], "truncated");
}

#[test]
fn truncated_extensions_are_still_rejected() {
    for bytes in [
        &[0xd4][..],
        &[0xc7][..],
        &[0xc9, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        let err = decode_err::<Numbers>(bytes);
        assert_eq!(err.key, "", "{bytes:02x?}");
        assert!(!err.message.is_empty(), "{bytes:02x?}");
    }
}

// ---------------------------------------------------------------------------
// 11. Robustness sweep

/// xorshift64*: tiny, deterministic, good enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

/// Decodes `bytes` as a plugin config; a panic fails the test with the input,
/// and an error must carry a message.
fn must_not_panic(bytes: &[u8]) {
    let result = panic::catch_unwind(AssertUnwindSafe(|| PluginConfig::from_msgpack(bytes)));
    match result {
        Err(_) => panic!("PluginConfig::from_msgpack panicked on {bytes:02x?}"),
        Ok(Err(err)) => assert!(
            !err.message.is_empty(),
            "empty error message for {bytes:02x?}: {err:?}"
        ),
        Ok(Ok(_)) => {}
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..20_000 {
        let len = rng.below(65);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        // Half the cases start like a config (a fixmap) to get past the
        // top-level type check more often.
        if case % 2 == 0 && !bytes.is_empty() {
            bytes[0] = 0x80 | (bytes[0] & 0x0f);
        }
        must_not_panic(&bytes);
    }
}

fn realistic_config_json() -> serde_json::Value {
    json!({
        "allow_caps": ["CHOWN", "NET_RAW", "SYS_TIME"],
        "allow_privileged": true,
        "allow_runtimes": ["runc"],
        "allowed_modes": null,
        "auth": {"config": "/etc/docker/config.json", "helper": null},
        "container_exists_attempts": 9,
        "disable_log_collection": false,
        "endpoint": "unix:///var/run/docker.sock",
        "extra_labels": ["job_name", "task*"],
        "gc": {
            "container": false,
            "dangling_containers": {
                "creation_grace": "2m",
                "dry_run": true,
                "enabled": true,
                "period": "90s"
            },
            "image": true,
            "image_delay": "10m"
        },
        "image_pull_timeout": "7m",
        "infra_image": "https://registry.local/pause:3.3",
        "infra_image_pull_timeout": null,
        "logging": {
            "config": {"syslog-address": "udp://10.0.0.1:514", "tag": "nomad"},
            "type": "syslog"
        },
        "nvidia_runtime": null,
        "oom_score_adj": -1,
        "pids_limit": 200,
        "policy": {
            "module": [{
                "config": {"allowed": "registry.local/*", "max": "3"},
                "deadline": "250ms",
                "failure_policy": "ignore",
                "hooks": ["task-admission", "gpu-runtime"],
                "memory_limit_mb": 128,
                "name": "image-allowlist",
                "path": "/opt/nomad/policies/image_allowlist.wasm",
                "sha256": null
            }]
        },
        "pull_activity_timeout": "3m",
        "tls": null,
        "volumes": {"enabled": true, "selinuxlabel": "z"},
        "windows_allow_insecure_container_admin": null
    })
}

#[test]
fn mutated_plugin_config_never_panics() {
    let valid = encode_json(&realistic_config_json());
    PluginConfig::from_msgpack(&valid).expect("the unmutated payload decodes");
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..=rng.below(4) {
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.byte();
                }
                2 => {
                    let at = rng.below(bytes.len() + 1);
                    bytes.insert(at, rng.byte());
                }
                _ if !bytes.is_empty() => {
                    let at = rng.below(bytes.len());
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        must_not_panic(&bytes);
    }
}

#[test]
fn duration_with_an_overflowing_fraction_is_an_error_not_a_panic() {
    // u128::MAX / 1000 microseconds plus .9 us: the integer part fits a u128
    // of nanoseconds but adding the fraction overflows it. Go rejects this as
    // an invalid duration; it must never panic (debug) or wrap to a tiny
    // duration (release).
    let text = "340282366920938463463374607431768211.9us";
    let bytes = map(&[("image_pull_timeout", str8(text))]);
    let result = panic::catch_unwind(|| PluginConfig::from_msgpack(&bytes));
    let Ok(result) = result else {
        panic!("PluginConfig::from_msgpack panicked on image_pull_timeout = {text:?}");
    };
    let err = result.expect_err("an overflowing duration must be rejected");
    assert_error(&err, "image_pull_timeout", &["invalid duration"]);
}

// ---------------------------------------------------------------------------
// 12. encode_json

#[test]
fn realistic_plugin_config_round_trips_through_encode_json() {
    let config = PluginConfig::from_msgpack(&encode_json(&realistic_config_json())).unwrap();

    assert_eq!(config.endpoint, "unix:///var/run/docker.sock");
    assert_eq!(config.auth.config, "/etc/docker/config.json");
    assert_eq!(config.auth.helper, "");
    assert_eq!(config.tls, PluginConfig::default().tls);
    assert_eq!(config.extra_labels, ["job_name", "task*"]);
    assert_eq!(config.allow_caps, ["CHOWN", "NET_RAW", "SYS_TIME"]);
    assert!(config.allow_privileged);
    assert_eq!(config.allow_runtimes, ["runc"]);
    assert_eq!(config.nvidia_runtime, "nvidia");
    assert_eq!(config.container_exists_attempts, 9);
    assert_eq!(config.oom_score_adj, -1);
    assert_eq!(config.pids_limit, 200);
    assert!(!config.disable_log_collection);
    assert!(!config.windows_allow_insecure_container_admin);
    assert_eq!(config.infra_image, "registry.local/pause:3.3");
    assert_eq!(config.image_pull_timeout.get(), Duration::from_secs(420));
    assert_eq!(
        config.infra_image_pull_timeout.get(),
        Duration::from_secs(300)
    );
    assert_eq!(config.pull_activity_timeout.get(), Duration::from_secs(180));

    assert!(config.gc.image);
    assert_eq!(config.gc.image_delay.get(), Duration::from_secs(600));
    assert!(!config.gc.container);
    let dangling = &config.gc.dangling_containers;
    assert!(dangling.enabled);
    assert!(dangling.dry_run);
    assert_eq!(dangling.period.get(), Duration::from_secs(90));
    assert_eq!(dangling.creation_grace.get(), Duration::from_secs(120));

    assert_eq!(config.logging.r#type, "syslog");
    assert_eq!(
        config.logging.config,
        string_map(&[("syslog-address", "udp://10.0.0.1:514"), ("tag", "nomad")])
    );
    assert!(config.volumes.enabled);
    assert_eq!(config.volumes.selinuxlabel, "z");
    assert_eq!(config.allowed_modes, PluginConfig::default().allowed_modes);

    assert_eq!(config.policy.module.len(), 1);
    let module = &config.policy.module[0];
    assert_eq!(module.name, "image-allowlist");
    assert_eq!(module.path, "/opt/nomad/policies/image_allowlist.wasm");
    assert_eq!(module.sha256, None);
    assert_eq!(module.hooks, [Hook::TaskAdmission, Hook::GpuRuntime]);
    assert_eq!(module.failure_policy, FailurePolicy::Ignore);
    assert_eq!(module.deadline.get(), Duration::from_millis(250));
    assert_eq!(module.memory_limit_mb, 128);
    assert_eq!(
        module.config,
        string_map(&[("allowed", "registry.local/*"), ("max", "3")])
    );
}

#[test]
fn encode_json_writes_non_negative_integers_in_the_uint_family() {
    let cases: [(serde_json::Value, &[u8]); 10] = [
        (json!(0), &[0x00]),
        (json!(127), &[0x7f]),
        (json!(128), &[0xcc, 0x80]),
        (json!(200), &[0xcc, 0xc8]),
        (json!(255), &[0xcc, 0xff]),
        (json!(256), &[0xcd, 0x01, 0x00]),
        (json!(65_535), &[0xcd, 0xff, 0xff]),
        (json!(65_536), &[0xce, 0x00, 0x01, 0x00, 0x00]),
        (
            json!(4_294_967_296_u64),
            &[0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
        ),
        (
            json!(u64::MAX),
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(encode_json(&value), expected, "{value}");
    }
}

#[test]
fn encode_json_writes_negative_integers_in_the_int_family() {
    let cases: [(serde_json::Value, &[u8]); 8] = [
        (json!(-1), &[0xff]),
        (json!(-32), &[0xe0]),
        (json!(-33), &[0xd0, 0xdf]),
        (json!(-128), &[0xd0, 0x80]),
        (json!(-200), &[0xd1, 0xff, 0x38]),
        (json!(-32_769), &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
        (
            json!(-2_147_483_649_i64),
            &[0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        ),
        (
            json!(i64::MIN),
            &[0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(encode_json(&value), expected, "{value}");
    }
}

#[test]
fn encode_json_writes_non_integers_as_float64() {
    assert_eq!(
        encode_json(&json!(1.5)),
        [0xcb, 0x3f, 0xf8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]
    );
    assert_eq!(encode_json(&json!(-0.25)), float64(-0.25));
}

#[test]
fn encode_json_sorts_object_keys_bytewise() {
    let bytes = encode_json(&json!({"b": 1, "a": 2, "B": 3, "aa": null}));
    assert_eq!(
        bytes,
        [
            0x84, 0xa1, b'B', 0x03, 0xa1, b'a', 0x02, 0xa2, b'a', b'a', NIL, 0xa1, b'b', 0x01
        ]
    );
}

#[test]
fn encode_json_writes_scalars_strings_and_container_headers() {
    assert_eq!(encode_json(&json!(null)), [NIL]);
    assert_eq!(encode_json(&json!(true)), [TRUE]);
    assert_eq!(encode_json(&json!(false)), [FALSE]);
    assert_eq!(encode_json(&json!("abc")), fixstr("abc"));
    assert_eq!(encode_json(&json!("x".repeat(31))), fixstr(&"x".repeat(31)));
    assert_eq!(encode_json(&json!("x".repeat(32))), str8(&"x".repeat(32)));
    assert_eq!(
        encode_json(&json!("x".repeat(256))),
        str16(&"x".repeat(256))
    );
    assert_eq!(
        encode_json(&json!("x".repeat(70_000))),
        str32(&"x".repeat(70_000))
    );
    assert_eq!(encode_json(&json!([1, "a"])), [0x92, 0x01, 0xa1, b'a']);
    let sixteen: Vec<u8> = encode_json(&json!(vec![0; 16]));
    assert_eq!(&sixteen[..3], &[0xdc, 0x00, 0x10]);
    assert_eq!(sixteen.len(), 3 + 16);
    let object: serde_json::Map<String, serde_json::Value> =
        (0..16).map(|n| (format!("k{n:02}"), json!(n))).collect();
    let encoded = encode_json(&serde_json::Value::Object(object));
    assert_eq!(&encoded[..3], &[0xde, 0x00, 0x10]);
}

#[test]
fn encode_json_numbers_decode_back_to_the_same_values() {
    for i in [i64::MIN, -129, -1, 0, 1, 127, 128, 65_536, i64::MAX] {
        let decoded = number_field("i", &encode_json(&json!(i))).unwrap();
        assert_eq!(decoded.i, i);
    }
    for u in [0, 255, 65_535, 4_294_967_295, u64::MAX] {
        let decoded = number_field("u", &encode_json(&json!(u))).unwrap();
        assert_eq!(decoded.u, u);
    }
    for f in [0.5, -1.25, 1e300] {
        let decoded = number_field("f", &encode_json(&json!(f))).unwrap();
        assert_eq!(decoded.f, f);
    }
}

#[test]
fn an_unknown_key_is_refused_even_when_its_value_is_nil() {
    let err = plugin_err(&map(&[("bogus", vec![NIL])]));
    assert_error(&err, "bogus", &["unknown field"]);
}

#[test]
fn encode_json_writes_numbers_as_go_cty_would() {
    // Integral floats are integers; decimals that are not binary fractions
    // travel as decimal strings, exactly as go-cty sends `0.1`.
    assert_eq!(encode_json(&serde_json::json!(5.0)), vec![0x05]);
    assert_eq!(
        encode_json(&serde_json::json!(0.1)),
        vec![0xa3, b'0', b'.', b'1']
    );
    let mut half = vec![0xcb];
    half.extend_from_slice(&0.5f64.to_be_bytes());
    assert_eq!(encode_json(&serde_json::json!(0.5)), half);
}
