//! bootlace's layout under the store URL's prefix (DESIGN §4), in one place.

use crate::archive::Compression;

pub const BUILDS: &str = "builds/";
pub const POINTERS: &str = "pointers/";
pub const REPORTS: &str = "reports/";
pub const DELTAS: &str = "deltas/";
/// The object tag a report is uploaded with under `[report] instance_tag`: its
/// machine id, which the IAM policy of docs/fleet.md matches against the writer.
pub const INSTANCE_TAG: &str = "bootlace-instance";
const JSON: &str = ".json";

/// `builds/<tag>.json`, the tag's manifest and commit point.
pub fn manifest(tag: &str) -> String {
    format!("{BUILDS}{tag}{JSON}")
}

/// `pointers/<name>.json`.
pub fn pointer(name: &str) -> String {
    format!("{POINTERS}{name}{JSON}")
}

/// `blobs/sha256/<hex>.tar.zst` (or `.tar.gz`): archives, named by their content.
pub fn blob(sha256: &str, compression: Compression) -> String {
    format!("blobs/sha256/{sha256}.{}", compression.extension())
}

/// `blobs/sha256/<hex>.index.json.zst`: a release's file index, named by the sha256
/// of its canonical JSON (DESIGN §6.9).
pub fn index_blob(sha256: &str) -> String {
    format!("blobs/sha256/{sha256}.index.json.zst")
}

/// `deltas/<tag>/<base archive sha256>`: the pack that rebuilds `tag` from a release
/// whose archive has that sha256.
pub fn delta(tag: &str, base_sha256: &str) -> String {
    format!("{DELTAS}{tag}/{base_sha256}")
}

/// `reports/<environment>/<role>/<machine_id>.json`.
pub fn report(environment: &str, role: &str, machine_id: &str) -> String {
    format!("reports/{environment}/{role}/{machine_id}{JSON}")
}

/// `(environment, role, machine_id)` of a key shaped like a report's, the parts
/// checked as the user-data rules check them; `None` for anything else.
pub fn report_parts(key: &str) -> Option<(&str, &str, &str)> {
    let rest = key.strip_prefix(REPORTS)?.strip_suffix(JSON)?;
    let mut parts = rest.split('/');
    let (environment, role, machine_id) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = |name: &str| crate::identity::userdata::check_name(name).is_ok();
    (parts.next().is_none() && valid(environment) && valid(role) && valid(machine_id)).then_some((
        environment,
        role,
        machine_id,
    ))
}

/// The name in `dir` that `key` stands for (`builds/v1.json` → `v1`), if it is one of
/// bootlace's JSON objects directly in that folder.
pub fn name_in<'a>(dir: &str, key: &'a str) -> Option<&'a str> {
    let name = key.strip_prefix(dir)?.strip_suffix(JSON)?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(manifest("v1.2"), "builds/v1.2.json");
        assert_eq!(pointer("prod"), "pointers/prod.json");
        assert_eq!(blob("ab12", Compression::Zstd), "blobs/sha256/ab12.tar.zst");
        assert_eq!(blob("ab12", Compression::Gzip), "blobs/sha256/ab12.tar.gz");
        assert_eq!(index_blob("ab12"), "blobs/sha256/ab12.index.json.zst");
        assert_eq!(delta("v2", "ab12"), "deltas/v2/ab12");
        assert_eq!(report("prod", "web", "i-1"), "reports/prod/web/i-1.json");
        assert_eq!(
            report_parts("reports/prod/web/i-1.json"),
            Some(("prod", "web", "i-1"))
        );
        for other in [
            "reports/prod/i-1.json",
            "reports/a/b/c/d.json",
            "reports/a/b/c.txt",
            "reports/../b/c.json",
        ] {
            assert_eq!(report_parts(other), None, "{other}");
        }
        assert_eq!(name_in(BUILDS, "builds/v1.json"), Some("v1"));
        assert_eq!(name_in(BUILDS, "builds/x/v1.json"), None);
        assert_eq!(name_in(POINTERS, "builds/v1.json"), None);
    }
}
