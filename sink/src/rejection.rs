//! Telling rows ClickHouse refuses for good from an outage.
//!
//! An insert can fail because the server is away, overloaded or
//! misconfigured (retry: the same rows will go in later), or because of the
//! rows themselves (retrying for ever would stall the stream). ClickHouse
//! answers both with HTTP 500 on older releases, so the exception code in
//! the body decides, as Vector's ClickHouse sink does. Only codes that name
//! the data count as rejections; everything else (unknown table or column,
//! too many parts, memory, timeouts, authentication, ZooKeeper, network) is
//! an outage and retried.

/// Exception codes that say "this data", not "this server".
const DATA_ERRORS: &[(u32, &str)] = &[
    (6, "CANNOT_PARSE_TEXT"),
    (26, "CANNOT_PARSE_QUOTED_STRING"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (38, "CANNOT_PARSE_DATE"),
    (41, "CANNOT_PARSE_DATETIME"),
    (53, "TYPE_MISMATCH"),
    (69, "ARGUMENT_OUT_OF_BOUND"),
    (70, "CANNOT_CONVERT_TYPE"),
    (72, "CANNOT_PARSE_NUMBER"),
    (117, "INCORRECT_DATA"),
    (131, "TOO_LARGE_STRING_SIZE"),
    (349, "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN"),
    // A row check the table owner wrote: `throwIf` in a column default or
    // a materialized view (before CONSTRAINTs existed), or a CONSTRAINT.
    (395, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO"),
    (469, "VIOLATED_CONSTRAINT"),
];

/// ClickHouse's reason when `error` is a rejection of the data, else None.
pub fn rejection(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        let clickhouse::error::Error::BadResponse(body) = cause.downcast_ref()? else {
            return None;
        };
        let code = exception_code(body)?;
        DATA_ERRORS
            .iter()
            .any(|(c, _)| *c == code)
            .then(|| first_line(body))
    })
}

/// The code of a ClickHouse exception body: `Code: 395, e.displayText() =
/// …` (18.x) or `Code: 395. DB::Exception: …` (current releases).
fn exception_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code: ")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

fn first_line(body: &str) -> String {
    const MAX: usize = 1_000;
    let line = body.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_response(body: &str) -> anyhow::Error {
        anyhow::Error::new(clickhouse::error::Error::BadResponse(body.to_owned()))
            .context("inserting into events")
    }

    #[test]
    fn data_errors_are_rejections_in_both_server_dialects() {
        let old = "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero, e.what() = DB::Exception";
        assert_eq!(rejection(&bad_response(old)).as_deref(), Some(old));
        let new = "Code: 27. DB::Exception: Cannot parse input: expected '\\t' (CANNOT_PARSE_INPUT_ASSERTION_FAILED) (version 24.8.1.1)\nmore";
        assert_eq!(
            rejection(&bad_response(new)).unwrap(),
            new.lines().next().unwrap()
        );
    }

    #[test]
    fn server_and_table_problems_are_outages() {
        for body in [
            "Code: 60, e.displayText() = DB::Exception: Table test.events doesn't exist.",
            "Code: 16. DB::Exception: No such column page_type in table events (NO_SUCH_COLUMN_IN_TABLE)",
            "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)",
            "Code: 241. DB::Exception: Memory limit (total) exceeded (MEMORY_LIMIT_EXCEEDED)",
            "Code: 516. DB::Exception: default: Authentication failed (AUTHENTICATION_FAILED)",
            "Service Unavailable",
            "",
        ] {
            assert_eq!(rejection(&bad_response(body)), None, "{body}");
        }
        let network = anyhow::Error::new(clickhouse::error::Error::Network("reset".into()));
        assert_eq!(rejection(&network), None);
        assert_eq!(rejection(&anyhow::anyhow!("Code: 395")), None);
    }
}
