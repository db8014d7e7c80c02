//! The image mapping: which local program stands for which container image.
//!
//! A YAML file lists image patterns in order; the first whose pattern matches a container's image
//! (as written in the pod spec) decides what runs:
//!
//! ```yaml
//! images:
//!   - image: "miniautoml/intent-classification:*"
//!     binary: "${MINIAUTOML_TARGET_DIR}/intent-classification"  # the image's entrypoint
//!     args: ["train"]                                            # the image's default CMD
//!     env: {RUST_LOG: info}                                      # the image's ENV
//!   - image: "busybox*"
//!     hostCommands: true   # `command[0]` is looked up on the node's PATH
//! ```
//!
//! Patterns use `*` (any run of characters, `/` and `:` included) and `?` (one character).
//! `$VAR` and `${VAR}` in `binary` are replaced from the node's environment when the file is read.
//! The file is read again for every pod, so mappings can be added while the node runs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{Error, Result};

/// The whole mapping file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageMapping {
    /// Entries, first match wins.
    #[serde(default)]
    pub images: Vec<ImageEntry>,
}

/// One image pattern and the program that stands for it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageEntry {
    /// Image pattern (`*` and `?` wildcards).
    pub image: String,
    /// The local binary that is the image's entrypoint.
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// The image's default arguments (its CMD), used when the container sets neither command
    /// nor args.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment the image defines; the container's own env overrides it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The image is a plain base image: the container's `command[0]` is a program on the node's
    /// PATH (or an absolute path).
    #[serde(default)]
    pub host_commands: bool,
}

impl ImageMapping {
    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<ImageMapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.to_path_buf(), e))?;
        ImageMapping::parse(&text, &|name| std::env::var(name).ok())
            .map_err(|reason| Error::Mapping(path.to_path_buf(), reason))
    }

    /// Parses a mapping, expanding variables in `binary` with `lookup`.
    pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<ImageMapping, String> {
        let mut mapping: ImageMapping = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        for entry in &mut mapping.images {
            match (&entry.binary, entry.host_commands) {
                (Some(_), true) => {
                    return Err(format!("{}: set binary or hostCommands, not both", entry.image));
                }
                (None, false) => return Err(format!("{}: set binary or hostCommands", entry.image)),
                _ => {}
            }
            if let Some(binary) = &entry.binary {
                let expanded = expand_variables(&binary.to_string_lossy(), lookup)
                    .map_err(|variable| format!("{}: {variable} is not set", entry.image))?;
                entry.binary = Some(PathBuf::from(expanded));
            }
        }
        Ok(mapping)
    }

    /// The first entry whose pattern matches `image`.
    pub fn resolve(&self, image: &str) -> Option<&ImageEntry> {
        self.images.iter().find(|entry| glob_match(&entry.image, image))
    }

    /// The patterns, for messages about an image that matched none.
    pub fn patterns(&self) -> Vec<&str> {
        self.images.iter().map(|entry| entry.image.as_str()).collect()
    }
}

/// Replaces `$NAME` and `${NAME}` with `lookup(NAME)`; an unset variable is an error naming it.
fn expand_variables(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let (name, remainder) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => return Err(format!("unclosed ${{ in {text}")),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
        }
        rest = remainder;
    }
    out.push_str(rest);
    Ok(out)
}

/// Shell-style wildcard match over the whole string: `*` any run, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was and how much text it has swallowed so far: on a mismatch, let it
    // swallow one more character and retry (linear backtracking, enough for one-star-at-a-time).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_whole_image_references() {
        assert!(glob_match(
            "miniautoml/intent-classification:*",
            "miniautoml/intent-classification:0.1.0"
        ));
        assert!(!glob_match(
            "miniautoml/intent-classification:*",
            "miniautoml/predictor:0.1.0"
        ));
        assert!(glob_match("*busybox*", "docker.io/library/busybox:1.36"));
        assert!(glob_match("busybox", "busybox"));
        assert!(!glob_match("busybox", "busybox:1.36"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*:*", "x:y"));
        assert!(!glob_match("*:*", "xy"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*a*b", "xxaxxab"));
    }

    const FILE: &str = r#"
images:
  - image: "miniautoml/intent-classification:*"
    binary: "${TARGET}/intent-classification"
    args: ["train"]
    env: {RUST_LOG: info}
  - image: "busybox*"
    hostCommands: true
  - image: "*"
    binary: "/bin/false"
"#;

    fn lookup(name: &str) -> Option<String> {
        (name == "TARGET").then(|| "/repo/target/debug".to_string())
    }

    #[test]
    fn first_matching_entry_wins_and_variables_expand() {
        let mapping = ImageMapping::parse(FILE, &lookup).unwrap();
        let trainer = mapping.resolve("miniautoml/intent-classification:0.1.0").unwrap();
        assert_eq!(
            trainer.binary.as_deref(),
            Some(Path::new("/repo/target/debug/intent-classification"))
        );
        assert_eq!(trainer.args, ["train"]);
        assert!(mapping.resolve("busybox:1.36").unwrap().host_commands);
        assert_eq!(mapping.resolve("nginx").unwrap().image, "*");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let unset = ImageMapping::parse("images: [{image: x, binary: \"$NOPE/x\"}]", &lookup);
        assert_eq!(unset.unwrap_err(), "x: NOPE is not set");
        let neither = ImageMapping::parse("images: [{image: x}]", &lookup);
        assert_eq!(neither.unwrap_err(), "x: set binary or hostCommands");
        let both = ImageMapping::parse("images: [{image: x, binary: /a, hostCommands: true}]", &lookup);
        assert_eq!(both.unwrap_err(), "x: set binary or hostCommands, not both");
        let typo = ImageMapping::parse("images: [{image: x, binray: /a}]", &lookup);
        assert!(typo.unwrap_err().contains("unknown field `binray`"));
    }

    #[test]
    fn variables_expand_in_both_spellings() {
        let expanded = expand_variables("$TARGET/a:${TARGET}/b$", &lookup).unwrap();
        assert_eq!(expanded, "/repo/target/debug/a:/repo/target/debug/b$");
    }
}
