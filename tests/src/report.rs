//! Reading and checking one schema-1 JSON crash report.

use serde_json::Value;

/// The value at JSON pointer `pointer` (e.g. `"/signal/name"`); panics,
/// showing the report, if it is absent.
pub fn at<'a>(report: &'a Value, pointer: &str) -> &'a Value {
    report
        .pointer(pointer)
        .unwrap_or_else(|| panic!("report has no {pointer}:\n{report:#}"))
}

/// The string at `pointer`; panics unless it is one.
pub fn str_at<'a>(report: &'a Value, pointer: &str) -> &'a str {
    at(report, pointer)
        .as_str()
        .unwrap_or_else(|| panic!("{pointer} is not a string:\n{report:#}"))
}

/// The integer at `pointer`; panics unless it is one.
pub fn int_at(report: &Value, pointer: &str) -> i64 {
    at(report, pointer)
        .as_i64()
        .unwrap_or_else(|| panic!("{pointer} is not an integer:\n{report:#}"))
}

/// The report's `frames`, innermost first.
pub fn frames(report: &Value) -> &[Value] {
    at(report, "/frames")
        .as_array()
        .unwrap_or_else(|| panic!("frames is not an array:\n{report:#}"))
}

/// The first frame whose `function` is exactly `function`, with its index.
pub fn find_frame<'a>(report: &'a Value, function: &str) -> Option<(usize, &'a Value)> {
    frames(report)
        .iter()
        .enumerate()
        .find(|(_, f)| f.get("function").and_then(Value::as_str) == Some(function))
}

/// Like [`find_frame`], but panics with the frame list if there is none.
pub fn expect_frame<'a>(report: &'a Value, function: &str) -> (usize, &'a Value) {
    find_frame(report, function)
        .unwrap_or_else(|| panic!("no frame for {function:?} in\n{}", describe_frames(report)))
}

/// One line per frame, for failure messages.
pub fn describe_frames(report: &Value) -> String {
    let field = |f: &Value, k: &str| match f.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    let mut text: String = frames(report)
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "  #{i:<2} {} {} in {} at {}:{} ({})\n",
                field(f, "address"),
                field(f, "offset"),
                field(f, "function"),
                field(f, "file"),
                field(f, "line"),
                field(f, "module"),
            )
        })
        .collect();
    if text.is_empty() {
        text.push_str("  (no frames)\n");
    }
    format!(
        "{text}  frames_truncated={} unwind_error={}",
        report.get("frames_truncated").unwrap_or(&Value::Null),
        report.get("unwind_error").unwrap_or(&Value::Null)
    )
}

/// Whether `s` is `0x` followed by lowercase hex digits.
pub fn is_hex_address(s: &str) -> bool {
    s.strip_prefix("0x").is_some_and(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The value of a `0x...` address string.
pub fn parse_address(s: &str) -> u64 {
    assert!(
        is_hex_address(s),
        "{s:?} is not a lowercase 0x-prefixed hex address"
    );
    u64::from_str_radix(&s[2..], 16).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// Whether `s` is an RFC 3339 timestamp (`2024-05-01T12:00:00.123Z`,
/// `...+02:00`).
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let date_time = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

fn check(ok: bool, what: &str, report: &Value) {
    assert!(ok, "report contract violated: {what}\n{report:#}");
}

fn is_null_or(v: Option<&Value>, pred: impl Fn(&Value) -> bool) -> bool {
    v.is_some_and(|v| v.is_null() || pred(v))
}

/// Checks everything the schema-1 contract says about any crash report,
/// whatever the crash: field presence, types and formats, non-empty
/// evidence and summary, a 16+ hex-digit fingerprint.
pub fn check_shape(report: &Value) {
    let get = |p: &str| report.pointer(p);
    let is_str = |p: &str| get(p).is_some_and(Value::is_string);
    let is_int = |p: &str| get(p).is_some_and(|v| v.is_i64() || v.is_u64());
    let is_bool = |p: &str| get(p).is_some_and(Value::is_boolean);

    check(
        get("/schema") == Some(&Value::from(1)),
        "schema is 1",
        report,
    );
    check(
        get("/type").and_then(Value::as_str) == Some("crash"),
        "type is \"crash\"",
        report,
    );
    check(
        get("/time").and_then(Value::as_str).is_some_and(is_rfc3339),
        "time is RFC 3339",
        report,
    );
    check(
        get("/host")
            .and_then(Value::as_str)
            .is_some_and(|h| !h.is_empty()),
        "host is a non-empty string",
        report,
    );
    for field in ["/pid", "/tid", "/ppid", "/uid"] {
        check(is_int(field), &format!("{field} is an integer"), report);
    }
    check(
        int_at(report, "/pid") > 0 && int_at(report, "/tid") > 0,
        "pid and tid are positive",
        report,
    );
    check(
        is_str("/comm") && is_str("/exe") && is_str("/runtime"),
        "comm, exe, runtime are strings",
        report,
    );
    check(
        get("/cmdline")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(Value::is_string)),
        "cmdline is an array of strings",
        report,
    );

    // A Go panic ends in exit(2): no signal, and `signal` is null.
    let has_signal = !get("/signal").is_some_and(Value::is_null);
    check(
        has_signal || get("/signal").is_some(),
        "signal is present (an object, or null)",
        report,
    );
    if has_signal {
        for field in ["/signal/number", "/signal/code", "/signal/errno"] {
            check(is_int(field), &format!("{field} is an integer"), report);
        }
        check(
            is_str("/signal/name") && is_str("/signal/code_name"),
            "signal name and code_name are strings",
            report,
        );
        check(
            is_null_or(get("/signal/fault_address"), |v| {
                v.as_str().is_some_and(is_hex_address)
            }),
            "signal.fault_address is null or a 0x hex string",
            report,
        );
        let sender_ok = is_null_or(get("/signal/sender"), |s| {
            ["pid", "tid", "uid"]
                .iter()
                .all(|k| s.get(k).is_some_and(|v| v.is_i64() || v.is_u64()))
                && ["comm", "exe"].iter().all(|k| s.get(k).is_some())
        });
        check(
            sender_ok,
            "signal.sender is null or {pid, tid, uid, comm, exe}",
            report,
        );
    }
    check(
        is_null_or(get("/last_words"), Value::is_string)
            && is_null_or(get("/goroutine"), |v| v.is_u64()),
        "last_words is null or a string, goroutine null or an integer",
        report,
    );

    let kinds = ["killed", "exited", "survived", "unknown"];
    check(
        get("/outcome/kind")
            .and_then(Value::as_str)
            .is_some_and(|k| kinds.contains(&k)),
        "outcome.kind is killed|exited|survived|unknown",
        report,
    );
    check(
        is_null_or(get("/outcome/exit_code"), Value::is_i64),
        "outcome.exit_code is null or an integer",
        report,
    );
    check(
        is_null_or(get("/outcome/signal"), Value::is_i64),
        "outcome.signal is null or an integer",
        report,
    );
    check(
        is_bool("/outcome/core_dumped"),
        "outcome.core_dumped is a boolean",
        report,
    );

    check(
        get("/class")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty()),
        "class is a non-empty string",
        report,
    );
    check(
        get("/summary")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty()),
        "summary is non-empty",
        report,
    );
    check(
        get("/evidence").and_then(Value::as_array).is_some_and(|e| {
            !e.is_empty()
                && e.iter()
                    .all(|s| s.as_str().is_some_and(|s| !s.trim().is_empty()))
        }),
        "evidence is a non-empty array of non-empty strings",
        report,
    );
    check(
        is_null_or(get("/message"), Value::is_string),
        "message is null or a string",
        report,
    );
    check(
        get("/tags").is_some_and(Value::is_array),
        "tags is an array",
        report,
    );
    check(
        is_bool("/frames_truncated"),
        "frames_truncated is a boolean",
        report,
    );
    check(
        is_null_or(get("/unwind_error"), Value::is_string),
        "unwind_error is null or a string",
        report,
    );
    check(
        get("/fingerprint")
            .and_then(Value::as_str)
            .is_some_and(|f| f.len() >= 16 && f.bytes().all(|b| b.is_ascii_hexdigit())),
        "fingerprint is 16+ hex digits",
        report,
    );

    for (i, frame) in frames(report).iter().enumerate() {
        let f = |k: &str| frame.get(k);
        let ok = f("address")
            .and_then(Value::as_str)
            .is_some_and(is_hex_address)
            && is_null_or(f("module"), Value::is_string)
            && is_null_or(f("build_id"), Value::is_string)
            && is_null_or(f("offset"), |v| v.as_str().is_some_and(is_hex_address))
            && is_null_or(f("function"), Value::is_string)
            && is_null_or(f("file"), Value::is_string)
            && is_null_or(f("line"), Value::is_u64)
            && is_null_or(f("column"), Value::is_u64)
            && f("inlined").is_some_and(Value::is_boolean);
        check(
            ok,
            &format!(
                "frame {i} has address, module, build_id, offset, function, file, line, column, inlined"
            ),
            report,
        );
    }
}
