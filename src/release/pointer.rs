//! The pointer format (`pointers/<name>.json`, DESIGN §4): which tag an environment
//! runs, its serial and history, and a staged rollout's state; parsed and checked
//! under its size cap, and read from the store. Changing one is
//! [`super::moves`]'s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::rollout::{Placement, Rollout};
use super::{check_sha256, check_tag};
use crate::store::{Store, Versioned, layout};

pub const FORMAT_VERSION: u32 = 1;
/// The format of a pointer that carries a rollout (DESIGN §6.3).
pub const ROLLOUT_FORMAT_VERSION: u32 = 2;
/// The most bytes of a pointer object read (DESIGN §6.5): a larger one is refused unread.
pub const MAX_BYTES: u64 = 64 << 10;
/// Past states kept in `history`.
pub const HISTORY: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pointer {
    pub format_version: u32,
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    /// Increases by one at every change.
    pub serial: u64,
    pub updated_at: String,
    pub updated_by: String,
    /// The pointer's earlier stable tags, newest first.
    pub history: Vec<HistoryEntry>,
    /// A staged rollout of another tag to a share of the instances (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Why a rollout in the object was set aside as unreadable: the stable tag is
    /// still followed, and instances report this.
    #[serde(skip)]
    pub ignored_rollout: Option<String>,
    /// The pointer this is (signed pointers, DESIGN §6.5): a copy of another pointer is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When a signed pointer stops being accepted, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What a pointer assigns to one instance: the release it should run, and its place
/// in the rollout when there is one.
#[derive(Clone, Debug)]
pub struct Assigned {
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    pub placement: Option<Placement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub tag: String,
    pub serial: u64,
    pub updated_at: String,
}

/// What a conditional read of a pointer found.
#[derive(Debug)]
pub enum Checked {
    /// The pointer, and the ETag to name in the next check.
    Changed(Box<Pointer>, Option<String>),
    NotModified,
    Missing,
}

impl Pointer {
    /// Reads pointer `name` unless its ETag is still `e_tag`: an unchanged pointer
    /// costs one request and no body.
    pub async fn check(store: &Store, name: &str, e_tag: Option<&str>) -> anyhow::Result<Checked> {
        let key = layout::pointer(name);
        let object = match store.get_if_changed(&key, e_tag, MAX_BYTES).await? {
            crate::store::Fetched::Object(object) => object,
            crate::store::Fetched::NotModified => return Ok(Checked::NotModified),
            crate::store::Fetched::Missing => return Ok(Checked::Missing),
        };
        let pointer = Pointer::parse(&object.bytes)
            .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
        Ok(Checked::Changed(Box::new(pointer), object.version.e_tag))
    }

    /// Reads pointer `name`; `None` when there is none yet.
    pub async fn load(store: &Store, name: &str) -> anyhow::Result<Option<Pointer>> {
        Ok(read_pointer(store, name).await?.map(|(pointer, _)| pointer))
    }

    /// The state that follows `previous` (or nothing) when everyone moves to
    /// `manifest`, ending any rollout.
    pub(super) fn next(previous: Option<&Pointer>, manifest: &Manifest, now: &str, by: &str) -> Pointer {
        let desired = Pointer {
            format_version: FORMAT_VERSION,
            tag: manifest.tag.clone(),
            sha256: manifest.sha256.clone(),
            size: manifest.size,
            serial: 1,
            updated_at: String::new(),
            updated_by: String::new(),
            history: Vec::new(),
            rollout: None,
            ignored_rollout: None,
            name: None,
            expires: None,
        };
        match previous {
            Some(previous) => previous.successor(desired, now, by),
            None => Pointer {
                updated_at: now.to_owned(),
                updated_by: by.to_owned(),
                ..desired
            },
        }
    }

    /// `desired`'s tag, digest and rollout as the state after `self`: the serial one
    /// higher, and `self`'s tag in the history when the stable tag changes.
    pub fn successor(&self, desired: Pointer, now: &str, by: &str) -> Pointer {
        let history = if desired.tag == self.tag {
            self.history.clone()
        } else {
            let mut history = vec![HistoryEntry {
                tag: self.tag.clone(),
                serial: self.serial,
                updated_at: self.updated_at.clone(),
            }];
            history.extend(self.history.iter().take(HISTORY - 1).cloned());
            history
        };
        Pointer {
            format_version: if desired.rollout.is_some() {
                ROLLOUT_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            },
            serial: self.serial.saturating_add(1),
            updated_at: now.to_owned(),
            updated_by: by.to_owned(),
            history,
            ..desired
        }
    }

    /// This pointer as it applies to one instance: `assigned` as its tag, no rollout,
    /// and as its serial the one a failure of that tag is recorded under (for a
    /// rollout's target, the serial its attempt began with).
    pub fn applied(&self, assigned: &Assigned) -> Pointer {
        let serial = match (&self.rollout, &assigned.placement) {
            (Some(rollout), Some(placement)) if placement.is_in && rollout.attempt_serial > 0 => {
                rollout.attempt_serial
            }
            _ => self.serial,
        };
        Pointer {
            tag: assigned.tag.clone(),
            sha256: assigned.sha256.clone(),
            size: assigned.size,
            serial,
            rollout: None,
            ..self.clone()
        }
    }

    /// The stable tag, whatever the rollout says.
    pub fn assign_stable(&self) -> Assigned {
        Assigned {
            tag: self.tag.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            placement: None,
        }
    }

    /// The release this pointer assigns to `machine_id` at `now`: the rollout's target
    /// when the instance is in it, the stable tag otherwise.
    pub fn assign(&self, machine_id: &str, now: std::time::SystemTime) -> Assigned {
        let Some(rollout) = &self.rollout else {
            return Assigned {
                tag: self.tag.clone(),
                sha256: self.sha256.clone(),
                size: self.size,
                placement: None,
            };
        };
        let placement = rollout.place(machine_id, now);
        let (tag, sha256, size) = if placement.is_in {
            (&rollout.tag, &rollout.sha256, rollout.size)
        } else {
            (&self.tag, &self.sha256, self.size)
        };
        Assigned {
            tag: tag.clone(),
            sha256: sha256.clone(),
            size,
            placement: Some(placement),
        }
    }

    pub fn to_json(&self) -> Bytes {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a pointer always serialises");
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

pub(super) async fn read_pointer(store: &Store, name: &str) -> anyhow::Result<Option<(Pointer, Versioned)>> {
    let key = layout::pointer(name);
    let Some(object) = store.get(&key, MAX_BYTES).await? else {
        return Ok(None);
    };
    let pointer = Pointer::parse(&object.bytes)
        .map_err(|why| anyhow::anyhow!("reading pointer {}: {why}", store.url_of(&key)))?;
    Ok(Some((pointer, object)))
}

impl Pointer {
    /// A pointer from its bytes, checked: its format version, and every tag and digest
    /// it names, with the rules the command line applies, before anything uses them.
    pub fn parse(bytes: &[u8]) -> Result<Pointer, String> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // A rollout that cannot be read is set aside, not the pointer: everyone
        // stays on the stable tag, and the reason is carried along.
        let rollout = value
            .as_object_mut()
            .and_then(|o| o.remove("rollout"))
            .filter(|r| !r.is_null());
        let mut pointer: Pointer = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let expected = if rollout.is_some() {
            ROLLOUT_FORMAT_VERSION
        } else {
            pointer
                .format_version
                .clamp(FORMAT_VERSION, ROLLOUT_FORMAT_VERSION)
        };
        if pointer.format_version != expected {
            return Err(format!(
                "format_version {}; this bootlace reads version {FORMAT_VERSION}, and \
                 {ROLLOUT_FORMAT_VERSION} with a rollout",
                pointer.format_version
            ));
        }
        if let Some(rollout) = rollout {
            match serde_json::from_value::<Rollout>(rollout)
                .map_err(|e| format!("rollout: {e}"))
                .and_then(|r| r.check().map(|()| r))
            {
                Ok(rollout) => pointer.rollout = Some(rollout),
                Err(why) => {
                    tracing::warn!("ignoring the pointer's rollout: {why}");
                    pointer.ignored_rollout = Some(format!("the pointer's rollout is ignored: {why}"));
                }
            }
        }
        check_tag(&pointer.tag).map_err(|e| e.0)?;
        check_sha256(&pointer.sha256)?;
        for entry in &mut pointer.history {
            check_tag(&entry.tag).map_err(|e| format!("history: {}", e.0))?;
            entry.updated_at = crate::text::printable(&entry.updated_at, 64);
        }
        // Free text shown to operators: made printable (the bytes a signature covers
        // are not touched).
        pointer.updated_at = crate::text::printable(&pointer.updated_at, 64);
        pointer.updated_by = crate::text::printable(&pointer.updated_by, 256);
        pointer.expires = pointer.expires.map(|e| crate::text::printable(&e, 64));
        pointer.name = pointer.name.map(|n| crate::text::printable(&n, 256));
        Ok(pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(tag: &str) -> Manifest {
        Manifest {
            format_version: 1,
            tag: tag.into(),
            archive: format!("blobs/sha256/{tag}.tar.zst"),
            compression: crate::archive::Compression::Zstd,
            sha256: format!("sha-{tag}"),
            size: 10,
            files: 1,
            unpacked_bytes: 5,
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "test".into(),
            source_revision: None,
            index: None,
        }
    }

    #[test]
    fn serial_and_history_advance() {
        let first = Pointer::next(None, &manifest("v1"), "t1", "me");
        assert_eq!((first.serial, first.history.len()), (1, 0));
        let mut pointer = first;
        for i in 2..=30 {
            pointer = Pointer::next(
                Some(&pointer),
                &manifest(&format!("v{i}")),
                &format!("t{i}"),
                "me",
            );
        }
        assert_eq!(pointer.serial, 30);
        assert_eq!(pointer.history.len(), HISTORY);
        assert_eq!(
            pointer.history[0],
            HistoryEntry {
                tag: "v29".into(),
                serial: 29,
                updated_at: "t29".into()
            }
        );
        assert_eq!(pointer.history[HISTORY - 1].serial, 10);
    }

    #[test]
    fn json_has_exactly_the_design_fields() {
        let pointer = Pointer::next(None, &manifest("v1"), "t1", "me");
        let json: serde_json::Value = serde_json::from_slice(&pointer.to_json()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "format_version",
            "tag",
            "sha256",
            "size",
            "serial",
            "updated_at",
            "updated_by",
            "history",
        ];
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected);
    }
}
