//! Plain-text tables for listings: one line per row, columns separated by
//! two spaces, an optional header line, and fields picked by name.

use serde_json::Value;

use crate::exit::UsageError;

/// Picks the fields of a `-o FIELDS` argument (comma-separated) out of
/// `known`, or all of `default` when no list is given.
pub fn select_fields(
    list: Option<&str>,
    known: &[&'static str],
    default: &[&'static str],
) -> Result<Vec<&'static str>, UsageError> {
    let Some(list) = list else {
        return Ok(default.to_vec());
    };
    list.split(',')
        .map(|field| {
            known.iter().copied().find(|k| *k == field).ok_or_else(|| {
                UsageError(format!(
                    "unknown field {field:?} in -o {list:?}; known fields: {}",
                    known.join(",")
                ))
            })
        })
        .collect()
}

/// Renders a JSON scalar for a table cell: strings without quotes, null
/// as `-`.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Formats `rows` as lines of aligned columns. The header line contains the
/// upper-case field names and is left out when `header` is false. The last
/// column is not padded, so lines carry no trailing spaces.
pub fn render(rows: &[Vec<String>], fields: &[&str], header: bool) -> Vec<String> {
    let mut all: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if header {
        all.push(fields.iter().map(|f| f.to_uppercase()).collect());
    }
    all.extend(rows.iter().cloned());

    let mut widths = vec![0; fields.len()];
    for row in &all {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    all.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            line
        })
        .collect()
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_time(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date. The
/// count is shifted to start on 0000-03-01 so that leap days end each
/// year, then split into 400-year eras of 146 097 days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_known_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_796_395_752), "2026-12-04T14:49:12Z");
    }

    #[test]
    fn render_aligns_and_drops_header() {
        let rows = vec![
            vec!["a".to_string(), "x".to_string()],
            vec!["long".to_string(), "y".to_string()],
        ];
        assert_eq!(
            render(&rows, &["uuid", "name"], true),
            ["UUID  NAME", "a     x", "long  y"]
        );
        assert_eq!(
            render(&rows, &["uuid", "name"], false),
            ["a     x", "long  y"]
        );
    }

    #[test]
    fn select_fields_rejects_unknown() {
        let known = ["uuid", "name"];
        assert_eq!(
            select_fields(Some("name,uuid"), &known, &known).unwrap(),
            ["name", "uuid"]
        );
        let error = select_fields(Some("uuid,size"), &known, &known).unwrap_err();
        assert!(error.0.contains("\"size\""), "{}", error.0);
    }
}
