//! Names callers of the original gRPC API choose, and the Kubernetes object names derived from
//! them. The original accepted any name (`"tweet_emotion"`, `"Intent Classifier #1"`); a
//! Kubernetes object name must be a DNS-1123 label here, so the object gets a name derived from
//! the caller's and the caller's own is kept verbatim in the annotation [`NAME_ANNOTATION`],
//! which the API returns. Also the names derived for objects both a controller and the gRPC API
//! reach (a run's Secret). A leaf module: it uses nothing else of the crate.

/// Annotation holding the name a gRPC caller gave a Dataset or a TrainingJob, verbatim.
pub const NAME_ANNOTATION: &str = "miniautoml.io/name";

/// The longest name a caller may give, in bytes of UTF-8 (as long as a Kubernetes object name;
/// annotation values could hold more, but a name is not a document).
pub const MAX_NAME_BYTES: usize = 253;

/// The longest object name derived here: a DNS-1123 label, so the name also fits a label value.
pub const MAX_OBJECT_NAME: usize = 63;

/// Key of the run token in a run's Secret.
pub const RUN_TOKEN_KEY: &str = "token";

/// The longest prefix of `name` of at most `max` bytes, without a trailing `-`, so that a
/// suffix keeps a derived name within Kubernetes' limits.
pub fn truncate(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches('-')
}

/// The longest stem of a derived name ([`derived`]): room is left for a suffix and, for a Job,
/// for the index its pods' host names add (`<job>-<index>` is a DNS label too).
pub const MAX_STEM: usize = 50;

/// The name of an object derived from the object `name` (a TrainingJob's Job, a
/// ModelDeployment's Deployment): `<name>-<suffix>` when `name` fits [`MAX_STEM`], else
/// `<name cut short>-<hash>-<suffix>` with a stem of [`MAX_STEM`] too, where `<hash>` is the
/// first 8 hex digits of the SHA-256 of the whole name. So two names that share a long prefix
/// derive two names, not one. The controllers still check that an object of the derived name
/// is their own before they use it: a name can be chosen to equal another's derived one.
pub fn derived(name: &str, suffix: &str) -> String {
    if name.len() <= MAX_STEM {
        return format!("{name}-{suffix}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest[..4].iter().map(|byte| format!("{byte:02x}")).collect();
    let cut = truncate(name, MAX_STEM - hash.len() - 1);
    format!("{cut}-{hash}-{suffix}")
}

/// Name of a run's Secret (its token under [`RUN_TOKEN_KEY`], and the storage credentials):
/// the TrainingJob controller creates it, the metadata store checks tokens against it.
pub fn run_secret(job: &miniautoml_api::TrainingJob) -> String {
    derived(job.metadata.name.as_deref().unwrap_or_default(), "run")
}

/// Checks a caller's name: any UTF-8 up to [`MAX_NAME_BYTES`] bytes, the empty name included.
pub fn check(field: &str, name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{field} is {} bytes long; at most {MAX_NAME_BYTES} bytes are accepted",
            name.len()
        ));
    }
    Ok(())
}

/// `name` as a DNS-1123 label of at most `max` bytes: ASCII letters lowercased, digits kept,
/// every other run of characters one `-`, no `-` at either end. `None` when nothing is left
/// (`""`, `"!!!"`, `"情感"`).
pub fn slug(name: &str, max: usize) -> Option<String> {
    let mut slug = String::with_capacity(name.len().min(max));
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !slug.is_empty() {
                slug.push('-');
            }
            gap = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
        if slug.len() >= max {
            break;
        }
    }
    slug.truncate(max);
    let slug = slug.trim_end_matches('-');
    (!slug.is_empty()).then(|| slug.to_string())
}

/// `<slug>-<id>`, the slug shortened so that the whole fits [`MAX_OBJECT_NAME`]; `<kind>-<id>`
/// when the name has no slug.
pub fn with_id(name: &str, id: u64, kind: &str) -> String {
    let suffix = format!("-{id}");
    match slug(name, MAX_OBJECT_NAME - suffix.len()) {
        Some(slug) => format!("{slug}{suffix}"),
        None => format!("{kind}{suffix}"),
    }
}

/// The object names to try, in order, for a Dataset the caller named `name` that gets id `id`:
/// the slug itself (`tweet_emotion` → `tweet-emotion`), then with the id (`tweet-emotion-2`, when
/// another Dataset has the name already), then `dataset-<id>`. Each is stable for the same name
/// and id, and the last two are unique because ids are.
pub fn dataset_candidates(name: &str, id: u64) -> Vec<String> {
    let mut candidates = Vec::with_capacity(3);
    if let Some(slug) = slug(name, MAX_OBJECT_NAME) {
        candidates.push(slug);
    }
    for candidate in [with_id(name, id, "dataset"), format!("dataset-{id}")] {
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_keep_short_names_and_tell_long_ones_apart() {
        assert_eq!(derived("tweets", "train"), "tweets-train");
        // Names that fit keep the name they always had.
        let fits = "a".repeat(MAX_STEM);
        assert_eq!(derived(&fits, "train"), format!("{fits}-train"));
        // Two names sharing their first 60 characters (and more) derive two names.
        let prefix = "intent-classifier-with-a-rather-long-descriptive-name-for-runs";
        let (one, two) = (format!("{prefix}-one"), format!("{prefix}-two"));
        for suffix in ["train", "run", "predictor", "predictor-s3"] {
            let (a, b) = (derived(&one, suffix), derived(&two, suffix));
            assert_ne!(a, b, "{suffix}");
            for name in [&a, &b] {
                assert!(is_dns_label(name), "{name}");
                assert!(name.len() <= MAX_STEM + 1 + suffix.len(), "{name}");
                assert!(name.ends_with(&format!("-{suffix}")), "{name}");
            }
            assert_eq!(a, derived(&one, suffix), "stable");
        }
        // A name whose cut ends in a dash loses it: no `--` in the derived name.
        let dashed = format!("{}-{}", "b".repeat(40), "c".repeat(20));
        assert!(!derived(&dashed, "train").contains("--"));
    }

    #[test]
    fn names_are_cut_on_a_character_boundary_without_a_trailing_dash() {
        assert_eq!(truncate("abc-def", 4), "abc");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_OBJECT_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn names_the_original_accepted_become_labels() {
        assert_eq!(slug("tweet_emotion", 63).as_deref(), Some("tweet-emotion"));
        assert_eq!(
            slug("Tweet Emotion v2.1", 63).as_deref(),
            Some("tweet-emotion-v2-1")
        );
        assert_eq!(slug("  __dataset-1__ ", 63).as_deref(), Some("dataset-1"));
        assert_eq!(
            slug("Intent Classifier #1", 63).as_deref(),
            Some("intent-classifier-1")
        );
        assert_eq!(slug("émotion", 63).as_deref(), Some("motion"));
        for nothing in ["", "!!!", "情感", " . "] {
            assert_eq!(slug(nothing, 63), None, "{nothing:?}");
        }
        let long = slug(&"ab_".repeat(200), 63).unwrap();
        assert!(is_dns_label(&long), "{long}");
    }

    #[test]
    fn dataset_names_fall_back_to_the_id() {
        assert_eq!(
            dataset_candidates("tweet_emotion", 2),
            ["tweet-emotion", "tweet-emotion-2", "dataset-2"]
        );
        assert_eq!(dataset_candidates("情感", 7), ["dataset-7"]);
        assert_eq!(dataset_candidates("", 7), ["dataset-7"]);
        for name in ["x".repeat(253), "_-".repeat(100), format!("{}é", "a".repeat(70))] {
            for candidate in dataset_candidates(&name, u64::MAX) {
                assert!(is_dns_label(&candidate), "{name:?} gave {candidate:?}");
            }
        }
    }

    #[test]
    fn run_names_carry_the_id() {
        assert_eq!(with_id("test1", 7, "run"), "test1-7");
        assert_eq!(with_id("Intent Classifier #1", 7, "run"), "intent-classifier-1-7");
        assert_eq!(with_id("!!!", 7, "run"), "run-7");
        let long = with_id(&"x".repeat(300), 123_456, "run");
        assert!(is_dns_label(&long) && long.ends_with("-123456"), "{long}");
    }

    #[test]
    fn names_are_limited_in_bytes_not_characters() {
        assert!(check("name", "").is_ok());
        assert!(check("name", &"é".repeat(126)).is_ok()); // 252 bytes
        let error = check("name", &"é".repeat(127)).unwrap_err();
        assert_eq!(error, "name is 254 bytes long; at most 253 bytes are accepted");
    }
}
