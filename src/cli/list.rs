//! `bootlace release list` and `release show`: what the store holds, and whether
//! what it holds is signed, by whom, and verifies.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde_json::json;

use super::{GlobalArgs, print_json};
use crate::config::Config;
use crate::release::{self, Manifest, Pointer, check_tag, pointer_name};
use crate::store::{Store, layout};

pub(super) async fn list(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    env: Option<&str>,
) -> anyhow::Result<()> {
    let pointer_names: Vec<String> = match env {
        Some(env) => vec![pointer_name(&config.deploy.pointer, env)?],
        None => names(store, layout::POINTERS).await?,
    };
    let keys = crate::trust::Keys::from_config(&config.trust)?;
    let listing = Listing {
        pointers: read_pointers(store, pointer_names, &keys).await?,
        releases: read_releases(store, &keys).await?,
        now: release::clock(),
        checked: !keys.is_empty(),
    };
    if global.json {
        return listing.print_json();
    }
    if listing.releases.manifests.is_empty() {
        outln!("no releases in {}", store.url());
        return Ok(());
    }
    listing.print_table()?;
    for (name, (p, _)) in &listing.pointers {
        if !listing.releases.manifests.iter().any(|m| m.tag == p.tag) {
            tracing::warn!("pointer {name} names {}, which has no manifest", p.tag);
        }
    }
    Ok(())
}

/// What `release list` shows: the pointers (with their signatures) and the releases.
struct Listing {
    pointers: BTreeMap<String, (Pointer, crate::trust::Signed)>,
    releases: Releases,
    now: std::time::SystemTime,
    /// Whether there are `[trust] keys` to check signatures against.
    checked: bool,
}

/// The releases' manifests, newest first, with their signatures, and the tags whose
/// manifest could not be read, with why.
struct Releases {
    manifests: Vec<Manifest>,
    signatures: BTreeMap<String, Signature>,
    unreadable: BTreeMap<String, String>,
}

/// The pointers of `names`; one that cannot be read is named and skipped, a store that
/// does not answer fails the listing.
async fn read_pointers(
    store: &Store,
    names: Vec<String>,
    keys: &crate::trust::Keys,
) -> anyhow::Result<BTreeMap<String, (Pointer, crate::trust::Signed)>> {
    let mut pointers = BTreeMap::new();
    for name in names {
        match load_pointer(store, &name, keys).await {
            Ok(Some(loaded)) => {
                pointers.insert(name, loaded);
            }
            Ok(None) => {}
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => tracing::warn!("skipping pointer {name}: {}", crate::error::one_line(&err)),
        }
    }
    Ok(pointers)
}

/// Every release's manifest and signature, 16 at a time.
async fn read_releases(store: &Store, keys: &crate::trust::Keys) -> anyhow::Result<Releases> {
    let build_keys = store.list(layout::BUILDS).await?;
    let signed: std::collections::HashSet<&str> = build_keys
        .iter()
        .filter_map(|k| k.strip_suffix(crate::release::signature::SIGNATURE_SUFFIX))
        .filter_map(|k| layout::name_in(layout::BUILDS, k))
        .collect();
    let mut tags: Vec<String> = build_keys
        .iter()
        .filter_map(|k| layout::name_in(layout::BUILDS, k))
        .map(str::to_owned)
        .collect();
    tags.retain(|tag| match check_tag(tag) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("skipping {}: {why}", layout::manifest(tag));
            false
        }
    });
    let signed = &signed;
    type Loaded = anyhow::Result<Option<(Manifest, Signature)>>;
    let loaded: Vec<(String, Loaded)> = futures::stream::iter(tags)
        .map(|tag| async move {
            let loaded = async {
                let key = layout::manifest(&tag);
                let Some(object) = store.get(&key, release::manifest::MAX_BYTES).await? else {
                    return Ok(None);
                };
                let manifest = Manifest::parse(&object.bytes, &tag)
                    .map_err(|why| anyhow::anyhow!("reading manifest {}: {why}", store.url_of(&key)))?;
                let signature = match signed.contains(tag.as_str()) {
                    true => Signature::of(store, &key, &object.bytes, keys).await?,
                    false => Signature::UNSIGNED,
                };
                anyhow::Ok(Some((manifest, signature)))
            }
            .await;
            (tag, loaded)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // One unreadable manifest does not hide the others: it is named and skipped. A
    // store that fails to answer still fails the listing.
    let mut releases = Releases {
        manifests: Vec::new(),
        signatures: BTreeMap::new(),
        unreadable: BTreeMap::new(),
    };
    for (tag, loaded) in loaded {
        match loaded {
            Ok(Some((manifest, signature))) => {
                releases.signatures.insert(tag, signature);
                releases.manifests.push(manifest);
            }
            Ok(None) => {}
            Err(err) if crate::store::StoreError::unanswered(&err) => return Err(err),
            Err(err) => {
                let why = crate::error::one_line(&err);
                tracing::warn!("skipping {tag}: {why}");
                releases.unreadable.insert(tag, why);
            }
        }
    }
    releases
        .manifests
        .sort_by(|a, b| (&b.created_at, &b.tag).cmp(&(&a.created_at, &a.tag)));
    Ok(releases)
}

impl Listing {
    /// The pointers that name `tag`.
    fn marks(&self, tag: &str) -> Vec<&str> {
        self.pointers
            .iter()
            .filter(|(_, (p, _))| p.tag == tag)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The pointers rolling `tag` out, with the share they give it now.
    fn rollouts(&self, tag: &str) -> Vec<String> {
        self.pointers
            .iter()
            .filter_map(|(n, (p, _))| {
                let r = p.rollout.as_ref().filter(|r| r.tag == tag)?;
                Some(format!("{n} (rollout {}%)", r.effective_percent(self.now)))
            })
            .collect()
    }

    fn print_json(&self) -> anyhow::Result<()> {
        let releases: Vec<_> = self
            .releases
            .manifests
            .iter()
            .map(|m| {
                json!({"tag": m.tag, "created_at": m.created_at, "sha256": m.sha256, "size": m.size,
                            "files": m.files, "pointers": self.marks(&m.tag), "rollouts": self.rollouts(&m.tag),
                            "signature": self.releases.signatures.get(&m.tag)})
            })
            .collect();
        let pointers: BTreeMap<&String, &Pointer> = self.pointers.iter().map(|(n, (p, _))| (n, p)).collect();
        print_json(
            &json!({"releases": releases, "pointers": pointers, "unreadable": self.releases.unreadable}),
        )
    }

    fn print_table(&self) -> anyhow::Result<()> {
        let manifests = &self.releases.manifests;
        let width = manifests.iter().map(|m| m.tag.len()).max().unwrap_or(3).max(3);
        outln!(
            "{:width$}  {:20}  {:>10}  {:>8}  {:16}  POINTERS",
            "TAG",
            "CREATED",
            "SIZE",
            "FILES",
            "SIGNED BY"
        );
        for m in manifests {
            let mut marks = self
                .marks(&m.tag)
                .iter()
                .map(|n| {
                    let (p, signed) = &self.pointers[*n];
                    format!(
                        "{n} ({})",
                        signed.describe_pointer(p.serial, p.expires.as_deref(), self.checked)
                    )
                })
                .collect::<Vec<_>>();
            marks.extend(self.rollouts(&m.tag));
            let signed_by = self
                .releases
                .signatures
                .get(&m.tag)
                .map(Signature::column)
                .unwrap_or_default();
            outln!(
                "{:width$}  {:20}  {:>10}  {:>8}  {:16}  {}",
                m.tag,
                m.created_at,
                size(m.size),
                m.files,
                signed_by,
                marks.join(", ")
            );
        }
        Ok(())
    }
}

pub(super) async fn show(
    global: &GlobalArgs,
    config: &Config,
    store: &Store,
    tag: &str,
) -> anyhow::Result<()> {
    check_tag(tag)?;
    // Read once: the manifest's bytes are also what its signature is checked over.
    let key = layout::manifest(tag);
    let bytes = store
        .get(&key, release::manifest::MAX_BYTES)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no release {tag} in {}", store.url()))?
        .bytes;
    let manifest = Manifest::parse(&bytes, tag)
        .map_err(|why| anyhow::anyhow!("reading manifest {}: {why}", store.url_of(&key)))?;
    if global.json {
        return print_json(&manifest);
    }
    let value = serde_json::to_value(&manifest)?;
    for (key, value) in value.as_object().into_iter().flatten() {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        outln!("{key:16}{text}");
    }
    let keys = crate::trust::Keys::from_config(&config.trust)?;
    let signature = Signature::of(store, &key, &bytes, &keys).await?;
    outln!("{:16}{}", "signature", signature.describe());
    // Which pointers name it, for everyone or in a rollout.
    let now = release::clock();
    let mut named = Vec::new();
    for name in names(store, layout::POINTERS).await? {
        let Ok(Some((pointer, signed))) = load_pointer(store, &name, &keys).await else {
            continue;
        };
        named.extend(pointer.history.iter().map(|h| h.tag.clone()));
        named.push(pointer.tag.clone());
        if pointer.tag == tag {
            outln!(
                "{:16}{name} (stable, {})",
                "pointer",
                signed.describe_pointer(pointer.serial, pointer.expires.as_deref(), !keys.is_empty())
            );
        }
        if let Some(r) = pointer.rollout.as_ref().filter(|r| r.tag == tag) {
            let halted = if r.halted { ", halted" } else { "" };
            outln!(
                "{:16}{name} ({}% of instances now{halted}, serial {})",
                "rollout",
                r.effective_percent(now),
                pointer.serial
            );
        }
    }
    print_deltas(store, tag, named).await
}

/// The delta packs that rebuild `tag` (DESIGN §6.9), each with its size and the
/// release it starts from: named when one of the `named` tags (those the pointers'
/// histories hold) has that archive, else by the archive's sha256.
async fn print_deltas(store: &Store, tag: &str, mut named: Vec<String>) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let dir = layout::delta(tag, "");
    let packs: Vec<crate::store::Listed> = store.list_all(&dir).try_collect().await?;
    let mut packs: Vec<(String, u64)> = packs
        .into_iter()
        .filter(|l| !l.odd)
        .filter_map(|l| {
            let base = l.key.strip_prefix(&dir)?;
            crate::release::check_sha256(base)
                .is_ok()
                .then(|| (base.to_owned(), l.size))
        })
        .collect();
    if packs.is_empty() {
        outln!("{:16}none", "deltas");
        return Ok(());
    }
    packs.sort();
    named.sort();
    named.dedup();
    named.retain(|t| t != tag);
    named.truncate(MAX_NAMED_BASES);
    // The archive each named tag has, read with a few manifests at a time.
    let archives: BTreeMap<String, String> = futures::stream::iter(named)
        .map(|t| async move {
            let object = store
                .get(&layout::manifest(&t), release::manifest::MAX_BYTES)
                .await
                .ok()??;
            let manifest = Manifest::parse(&object.bytes, &t).ok()?;
            Some((manifest.sha256, t))
        })
        .buffer_unordered(8)
        .filter_map(|found| async move { found })
        .collect()
        .await;
    for (base, size) in packs {
        let from = match archives.get(&base) {
            Some(t) => format!("{t} (archive {})", &base[..12]),
            None => format!("archive {}", &base[..12]),
        };
        outln!("{:16}from {from}: {size} bytes", "delta");
    }
    Ok(())
}

/// How many of the tags the pointers name `release show` reads to name a pack's base.
const MAX_NAMED_BASES: usize = 64;

/// Pointer `name`, and what its signature says: whether it verifies, and by which key.
async fn load_pointer(
    store: &Store,
    name: &str,
    keys: &crate::trust::Keys,
) -> anyhow::Result<Option<(Pointer, crate::trust::Signed)>> {
    let key = layout::pointer(name);
    let Some(object) = store.get(&key, release::pointer::MAX_BYTES).await? else {
        return Ok(None);
    };
    let pointer = Pointer::parse(&object.bytes)
        .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
    let signed = crate::trust::Signed::of(keys, store, &key, &object.bytes).await?;
    if let crate::trust::Signed::Bad(why) = &signed {
        tracing::warn!("pointer {} does not verify: {why}", store.url_of(&key));
    }
    Ok(Some((pointer, signed)))
}

/// Whether an object is signed, by which key, and whether that key is one of
/// `[trust] keys` and the signature verifies.
#[derive(Debug, serde::Serialize)]
struct Signature {
    /// The key id the signature names; `None` when unsigned.
    key_id: Option<String>,
    /// Checked against `[trust] keys`: `None` without any.
    verified: Option<bool>,
    /// Why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

impl Signature {
    async fn of(
        store: &Store,
        key: &str,
        bytes: &[u8],
        keys: &crate::trust::Keys,
    ) -> anyhow::Result<Signature> {
        let Some(text) = crate::release::signature::read_signature(store, key).await? else {
            return Ok(Signature::UNSIGNED);
        };
        let key_id = std::str::from_utf8(&text)
            .ok()
            .and_then(|text| minisign::SignatureBox::from_string(text).ok())
            .map(|sig| crate::release::signature::key_id(sig.keynum()));
        let checked = (!keys.is_empty()).then(|| keys.verify(store, key, bytes, Some(&text)));
        Ok(Signature {
            verified: checked.as_ref().map(Result::is_ok),
            problem: match (&key_id, checked) {
                (None, _) => Some(format!(
                    "{} is not a minisign signature",
                    crate::release::signature::signature_key(key)
                )),
                (_, Some(Err(refused))) => Some(refused.to_string()),
                _ => None,
            },
            key_id,
        })
    }

    const UNSIGNED: Signature = Signature {
        key_id: None,
        verified: None,
        problem: None,
    };

    /// For a table: the key id, `-` when unsigned, `BAD` when it does not verify.
    fn column(&self) -> String {
        match (&self.key_id, &self.problem) {
            (_, Some(_)) => "BAD".into(),
            (Some(id), None) => id.clone(),
            (None, None) => "-".into(),
        }
    }

    fn describe(&self) -> String {
        match (&self.key_id, self.verified, &self.problem) {
            (None, _, None) => "unsigned".into(),
            (_, _, Some(problem)) => format!("DOES NOT VERIFY: {problem}"),
            (Some(id), Some(true), None) => format!("key {id} (verified against [trust] keys)"),
            (Some(id), _, None) => format!("key {id} (not checked: no [trust] keys here)"),
        }
    }
}

/// The names of bootlace's JSON objects in a layout folder.
async fn names(store: &Store, dir: &str) -> anyhow::Result<Vec<String>> {
    let keys = store.list(dir).await?;
    Ok(keys
        .iter()
        .filter_map(|k| layout::name_in(dir, k))
        .map(str::to_owned)
        .collect())
}

/// Bytes for people: 1.2 MiB.
pub(super) fn size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}
