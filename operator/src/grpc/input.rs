//! Checks of what gRPC callers send, before any of it reaches a label selector, an object name,
//! an S3 key or an error message: ids are positive numbers, version hashes look like the
//! original's, buckets and keys are ones S3 accepts, and text quoted back is cut short.

use tonic::Status;

/// The longest id accepted, in digits (u64::MAX has 20).
const MAX_ID_DIGITS: usize = 19;

/// The longest S3 object key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The longest version hash accepted: `"hash"` and the Base64 of a bit set of 4096 commits.
const MAX_HASH_BYTES: usize = 700;

/// How much of a caller's text an error message quotes.
const QUOTED: usize = 64;

/// `text` quoted for an error message: at most [`QUOTED`] bytes of it, and its length when cut.
pub fn shown(text: &str) -> String {
    if text.len() <= QUOTED {
        return format!("{text:?}");
    }
    let mut end = QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// The id in `value` (a dataset, commit or run id: a positive number), else INVALID_ARGUMENT
/// naming `field`.
pub fn id(field: &str, value: &str) -> Result<u64, Status> {
    let text = value.trim();
    if text.is_empty() {
        return Err(Status::invalid_argument(format!("\"{field}\" is required.")));
    }
    let parsed = (text.len() <= MAX_ID_DIGITS && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|id| *id > 0);
    parsed.ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field} {} is not an id: ids are positive numbers",
            shown(value)
        ))
    })
}

/// A version hash as the original writes them (`"hash"` and standard Base64), else
/// INVALID_ARGUMENT.
pub fn version_hash(field: &str, value: &str) -> Result<(), Status> {
    let well_formed = value.len() <= MAX_HASH_BYTES
        && value.starts_with("hash")
        && value[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if well_formed {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {} is not a version hash (\"hash\" and Base64, as PrepareTrainingDataset returns)",
            shown(value)
        )))
    }
}

/// An S3 bucket name by the rules S3 gives (3 to 63 lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit), else INVALID_ARGUMENT.
pub fn bucket(value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument("\"bucket\" is required."));
    }
    let bytes = value.as_bytes();
    let valid = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "bucket {} is not an S3 bucket name (3 to 63 lowercase letters, digits, '.' and '-')",
            shown(value)
        )))
    }
}

/// An S3 object key (or key prefix): 1 to [`MAX_KEY_BYTES`] bytes without control characters
/// or `.`/`..` segments (which stores resolve differently, or refuse), else INVALID_ARGUMENT
/// naming `field`.
pub fn key(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("\"{field}\" is required.")));
    }
    let dot_segment = value.split('/').any(|segment| segment == "." || segment == "..");
    if value.len() > MAX_KEY_BYTES || value.chars().any(char::is_control) || dot_segment {
        return Err(Status::invalid_argument(format!(
            "{field} {} is not an S3 object key (at most {MAX_KEY_BYTES} bytes, no control characters, \
             no . or .. segments)",
            shown(value)
        )));
    }
    Ok(())
}

/// The longest caller-given segment of an object key (an epoch id).
const MAX_SEGMENT_BYTES: usize = 64;

/// One segment of an object key a caller names (an epoch id): 1 to 64 ASCII letters, digits,
/// `.`, `_` and `-`, not `.` or `..`, else INVALID_ARGUMENT naming `field`. No `/`, so it
/// stays inside the folder the operator puts it in.
pub fn key_segment(field: &str, value: &str) -> Result<(), Status> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.is_empty()
        || value.len() > MAX_SEGMENT_BYTES
        || !value.chars().all(allowed)
        || value == "."
        || value == ".."
    {
        return Err(Status::invalid_argument(format!(
            "{field} {} must be 1 to {MAX_SEGMENT_BYTES} letters, digits, '.', '_' or '-' (such as \"0-3\": <rank>-<epoch>)",
            shown(value)
        )));
    }
    Ok(())
}

/// The gRPC metadata key a caller sets to make a retried Train safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The longest idempotency key accepted, in bytes.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// The label value recording a caller's `idempotency-key` (its SHA-256, 40 hex digits: a label
/// value holds at most 63 characters of a restricted alphabet, a key any visible ASCII), or
/// `None` when the request has none; INVALID_ARGUMENT when the key is empty, too long or not
/// visible ASCII.
pub fn idempotency_key(metadata: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
    use sha2::Digest;
    let Some(value) = metadata.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Status::invalid_argument(format!(
            "the {IDEMPOTENCY_KEY} header must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters \
             (a UUID, say); got {}",
            shown(&String::from_utf8_lossy(key))
        )));
    }
    let digest = sha2::Sha256::digest(key);
    Ok(Some(hex::encode(&digest[..20])))
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn idempotency_keys_become_label_values() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(idempotency_key(&metadata).unwrap(), None);
        metadata.insert(IDEMPOTENCY_KEY, "run-7f3c".parse().unwrap());
        let label = idempotency_key(&metadata).unwrap().unwrap();
        assert_eq!(label.len(), 40);
        assert!(label.bytes().all(|b| b.is_ascii_hexdigit()));
        // The same key, the same label; another key, another.
        assert_eq!(idempotency_key(&metadata).unwrap().unwrap(), label);
        metadata.insert(IDEMPOTENCY_KEY, "run-7f3d".parse().unwrap());
        assert_ne!(idempotency_key(&metadata).unwrap().unwrap(), label);
        for bad in [String::new(), "a b".into(), "x".repeat(129)] {
            metadata.insert(IDEMPOTENCY_KEY, bad.parse().unwrap());
            let refused = idempotency_key(&metadata).unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                refused.message().contains("idempotency-key"),
                "{}",
                refused.message()
            );
        }
    }

    #[test]
    fn ids_are_positive_numbers_and_nothing_else() {
        assert_eq!(id("dataset_id", " 42 ").unwrap(), 42);
        for bad in [
            "",
            "  ",
            "0",
            "-1",
            "1,app!=x",
            "1 2",
            "99999999999999999999999",
            "١٢",
            "+1",
        ] {
            let status = id("dataset_id", bad).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "0/../../x",
            "0-1?versionId=2",
            "é",
            &"1".repeat(65),
        ] {
            assert_eq!(
                key_segment("epoch_id", bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
        for good in ["0-1", "3-10000", "epoch_1.5"] {
            key_segment("epoch_id", good).unwrap();
        }
        let long = id("run_id", &"9".repeat(1 << 20)).unwrap_err();
        assert!(long.message().len() < 200, "the message quotes the start only");
        assert!(long.message().contains("(1048576 bytes)"), "{}", long.message());
    }

    #[test]
    fn hashes_buckets_and_keys_are_checked() {
        assert!(version_hash("hash", "hashBg==").is_ok());
        assert!(version_hash("hash", "hash").is_ok(), "the empty selection's hash");
        for bad in [
            "",
            "Bg==",
            "hash%%",
            "hash\0",
            &format!("hash{}", "A".repeat(800)),
        ] {
            assert!(version_hash("hash", bad).is_err(), "{bad:?}");
        }
        assert!(bucket("miniautoml").is_ok() && bucket("my.bucket-1").is_ok());
        for bad in ["", "ab", "Upper", "a/b", "-ab", "ab-", &"a".repeat(64)] {
            assert!(bucket(bad).is_err(), "{bad:?}");
        }
        assert!(key("path", "raw/tweets/part 1.csv").is_ok() && key("path", "数据.csv").is_ok());
        for bad in [
            "",
            "a\0b",
            "a\nb",
            "../../etc/passwd",
            "raw/./x",
            &"a".repeat(1025),
        ] {
            assert!(key("path", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_text_is_quoted_short() {
        assert_eq!(shown("abc"), "\"abc\"");
        let cut = shown(&"é".repeat(100));
        assert!(cut.ends_with("… (200 bytes)"), "{cut}");
    }
}
