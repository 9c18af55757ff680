//! Staged rollouts (DESIGN §6.3): which instances a pointer's rollout sends to its
//! target, and what share it covers at a given time. Everything here is a pure
//! function of the pointer, the machine id and the clock, so anyone can recompute
//! which instances are in.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Manifest, Pointer};
use crate::error::BadInput;

/// Buckets per instance: a percentage is honoured to a hundredth.
pub const BUCKETS: u64 = 10_000;

/// A pointer's rollout: `tag` for the share of instances the percentage covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub tag: String,
    pub sha256: String,
    pub size: u64,
    pub salt: String,
    /// The fixed percentage; while halted, where it stood when halted.
    pub percent: f64,
    pub waves: Option<Vec<Wave>>,
    pub started_at: String,
    pub halted: bool,
    /// When it was halted: a resumed rollout's waves are shifted by the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted_at: Option<String>,
    /// The pointer serial this attempt at the target began with. An instance records a
    /// failure of the target under it, so halting, resuming or resizing the rollout
    /// does not make a failed instance try again; a new promote or `set --force` does.
    #[serde(default)]
    pub attempt_serial: u64,
}

/// One step of a timed rollout: `percent` from `after` past the start on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub percent: f64,
    pub after: String,
}

/// An instance's place in a rollout, as its report says it (`rollout` in §6.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub target: String,
    pub percent: f64,
    pub bucket: u64,
    #[serde(rename = "in")]
    pub is_in: bool,
}

/// `u64::from_be_bytes(sha256("bootlace-rollout\0" ‖ salt ‖ "\0" ‖ machine_id)[0..8]) % 10000`.
pub fn bucket(salt: &str, machine_id: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"bootlace-rollout\0")
        .chain_update(salt.as_bytes())
        .chain_update(b"\0")
        .chain_update(machine_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// Whether `bucket` is in at `percent`: `bucket < round(percent × 100)`. Growing the
/// percentage only ever adds buckets.
pub fn covers(percent: f64, bucket: u64) -> bool {
    bucket < (percent * 100.0).round() as u64
}

impl Rollout {
    /// The percentage in force at `now`: the last wave due when there are waves (and
    /// the rollout is not halted), else the fixed or frozen one.
    pub fn effective_percent(&self, now: SystemTime) -> f64 {
        match (&self.waves, self.halted) {
            (Some(waves), false) => {
                let Some(started) = parse_time(&self.started_at) else {
                    return self.percent;
                };
                // A wave due at once is in force whatever the clocks say: an instance
                // whose clock is behind the operator's must not see less than the
                // rollout began (or was resumed) with.
                waves
                    .iter()
                    .filter(|w| wave_after(w).is_some_and(|after| after.is_zero() || started + after <= now))
                    .map(|w| w.percent)
                    .next_back()
                    .unwrap_or(0.0)
            }
            _ => self.percent,
        }
    }

    /// Where `machine_id` stands in this rollout at `now`.
    pub fn place(&self, machine_id: &str, now: SystemTime) -> Placement {
        let percent = self.effective_percent(now);
        let bucket = bucket(&self.salt, machine_id);
        Placement {
            target: self.tag.clone(),
            percent,
            bucket,
            is_in: covers(percent, bucket),
        }
    }

    /// When the effective percentage next changes by the clock, if it will.
    pub fn next_wave(&self, now: SystemTime) -> Option<SystemTime> {
        let (Some(waves), false) = (&self.waves, self.halted) else {
            return None;
        };
        let started = parse_time(&self.started_at)?;
        waves
            .iter()
            .filter_map(|w| wave_after(w).map(|after| started + after))
            .find(|at| *at > now)
    }

    /// Checks what a rollout read from the store says, before anything uses it.
    pub fn check(&self) -> Result<(), String> {
        super::check_tag(&self.tag).map_err(|e| format!("rollout: {}", e.0))?;
        super::check_sha256(&self.sha256).map_err(|e| format!("rollout: {e}"))?;
        check_salt(&self.salt).map_err(|e| format!("rollout: {}", e.0))?;
        check_percent(self.percent).map_err(|e| format!("rollout: {}", e.0))?;
        if parse_time(&self.started_at).is_none() {
            return Err(format!(
                "rollout: started_at {:?} is not an RFC 3339 time",
                self.started_at
            ));
        }
        if let Some(waves) = &self.waves {
            check_waves(waves).map_err(|e| format!("rollout: {}", e.0))?;
        }
        Ok(())
    }
}

/// How a rollout starts: a fixed percentage, or timed waves.
#[derive(Clone, Debug)]
pub enum Plan {
    Percent(f64),
    Waves(Vec<Wave>),
}

/// The pointer state that starts a rollout of `manifest` on `current`.
pub fn start(
    current: &Pointer,
    manifest: &Manifest,
    plan: &Plan,
    salt: Option<&str>,
    now: &str,
) -> anyhow::Result<Pointer> {
    if manifest.tag == current.tag {
        return Err(BadInput(format!(
            "{} is already the stable tag; a rollout needs another tag",
            manifest.tag
        ))
        .into());
    }
    let salt = salt.unwrap_or(&manifest.tag);
    check_salt(salt)?;
    let (percent, waves) = match plan {
        Plan::Percent(percent) => (*percent, None),
        Plan::Waves(waves) => (0.0, Some(waves.clone())),
    };
    Ok(Pointer {
        rollout: Some(Rollout {
            tag: manifest.tag.clone(),
            sha256: manifest.sha256.clone(),
            size: manifest.size,
            salt: salt.to_owned(),
            percent,
            waves,
            started_at: now.to_owned(),
            halted: false,
            halted_at: None,
            attempt_serial: current.serial.saturating_add(1),
        }),
        ..current.clone()
    })
}

/// The rollout of `pointer`, or the error that there is none.
pub fn of(pointer: &Pointer) -> Result<&Rollout, BadInput> {
    pointer.rollout.as_ref().ok_or_else(|| {
        BadInput(format!(
            "pointer names {} for everyone; there is no rollout (start one with release promote TAG --percent P)",
            pointer.tag
        ))
    })
}

/// What the operator does to a running rollout.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    /// A fixed percentage from now on (waves end, a halt is lifted); `retry`: the
    /// instances that failed the target try it again.
    Set {
        percent: f64,
        retry: bool,
    },
    Halt,
    Resume,
    /// Everyone back to the stable tag.
    Abort,
    /// The target becomes the stable tag for everyone.
    Finish,
}

/// The pointer state after `action`, or `None` when it changes nothing.
pub fn apply(current: &Pointer, action: Action, now: SystemTime) -> Result<Option<Pointer>, BadInput> {
    let rollout = of(current)?;
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let mut next = current.clone();
    match action {
        Action::Set { percent, retry } => {
            check_percent(percent)?;
            if rollout.waves.is_none() && !rollout.halted && rollout.percent == percent && !retry {
                return Ok(None);
            }
            next.rollout = Some(Rollout {
                percent,
                waves: None,
                halted: false,
                halted_at: None,
                attempt_serial: if retry {
                    current.serial.saturating_add(1)
                } else {
                    rollout.attempt_serial
                },
                ..rollout.clone()
            });
        }
        Action::Halt if rollout.halted => return Ok(None),
        Action::Halt => {
            next.rollout = Some(Rollout {
                percent: rollout.effective_percent(now),
                halted: true,
                halted_at: Some(stamp),
                ..rollout.clone()
            });
        }
        Action::Resume if !rollout.halted => return Ok(None),
        Action::Resume => {
            next.rollout = Some(Rollout {
                halted: false,
                halted_at: None,
                ..resumed(rollout, now)
            });
        }
        Action::Abort => next.rollout = None,
        Action::Finish => {
            next.tag.clone_from(&rollout.tag);
            next.sha256.clone_from(&rollout.sha256);
            next.size = rollout.size;
            next.rollout = None;
        }
    }
    Ok(Some(next))
}

/// A halted rollout as it resumes at `now`: never smaller than it stood when halted,
/// whatever the resuming machine's clock says. Timed waves are laid out again from
/// `now`: the frozen share at once, then each wave still to come after the time it had
/// left when the rollout was halted (measured on the halting machine's clock).
fn resumed(rollout: &Rollout, now: SystemTime) -> Rollout {
    let stamp = humantime::format_rfc3339_seconds(now.min(last_time())).to_string();
    let (Some(waves), Some(started), Some(halted)) = (
        &rollout.waves,
        parse_time(&rollout.started_at),
        rollout.halted_at.as_deref().and_then(parse_time),
    ) else {
        return rollout.clone();
    };
    let frozen = rollout.percent;
    let mut laid = vec![Wave {
        percent: frozen,
        after: "0s".into(),
    }];
    let later: Vec<&Wave> = waves.iter().filter(|w| w.percent > frozen).collect();
    let cap = crate::units::duration::MAX.as_secs();
    let mut last = 0;
    for (i, wave) in later.iter().enumerate() {
        let Some(after) = wave_after(wave) else {
            continue;
        };
        let left = (started + after)
            .duration_since(halted)
            .unwrap_or_default()
            .as_secs();
        // Delays rise (as every wave list's must) and stay within the year a duration
        // may span, leaving a second for each wave still to come.
        let room = cap - (later.len() - 1 - i) as u64;
        last = left.max(last + 1).min(room);
        // In seconds: a humantime rendering of a year can parse back as more than one.
        laid.push(Wave {
            percent: wave.percent,
            after: format!("{last}s"),
        });
    }
    Rollout {
        waves: Some(laid),
        started_at: stamp,
        ..rollout.clone()
    }
}

fn wave_after(wave: &Wave) -> Option<Duration> {
    crate::units::duration::parse(&wave.after).ok()
}

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
fn last_time() -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// A percentage of instances: a number from 0 to 100.
pub fn parse_percent(text: &str) -> Result<f64, BadInput> {
    let digits = text.trim();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(BadInput(format!(
            "percent {text:?} is not a number from 0 to 100"
        )));
    }
    let percent: f64 = digits
        .parse()
        .map_err(|_| BadInput(format!("percent {text:?} is not a number from 0 to 100")))?;
    check_percent(percent)?;
    // Buckets are hundredths of a percent: a finer share could not be honoured.
    if text
        .trim()
        .split_once('.')
        .is_some_and(|(_, decimals)| decimals.len() > 2)
    {
        return Err(BadInput(format!(
            "percent {text:?} has more than two decimals; rollouts go by hundredths of a percent"
        )));
    }
    Ok(percent)
}

fn check_percent(percent: f64) -> Result<(), BadInput> {
    if percent.is_finite() && (0.0..=100.0).contains(&percent) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "percent {percent} is not a number from 0 to 100"
        )))
    }
}

/// `--waves "1@0s,10@2h,50@1d,100@2d"`: percentages rising with their delays, the last
/// at 100.
pub fn parse_waves(spec: &str) -> Result<Vec<Wave>, BadInput> {
    let waves = spec
        .split(',')
        .map(|step| {
            let (percent, after) = step.trim().split_once('@').ok_or_else(|| {
                BadInput(format!(
                    "wave {step:?} is not PERCENT@DELAY (write waves as \"1@0s,10@2h,100@1d\")"
                ))
            })?;
            let percent = parse_percent(percent)?;
            crate::units::duration::parse(after).map_err(|e| BadInput(format!("wave {step:?}: {e}")))?;
            Ok(Wave {
                percent,
                after: after.trim().to_owned(),
            })
        })
        .collect::<Result<Vec<_>, BadInput>>()?;
    check_waves(&waves)?;
    Ok(waves)
}

fn check_waves(waves: &[Wave]) -> Result<(), BadInput> {
    let mut last: Option<(f64, Duration)> = None;
    for wave in waves {
        check_percent(wave.percent)?;
        let after = wave_after(wave)
            .ok_or_else(|| BadInput(format!("wave delay {:?} is not a duration", wave.after)))?;
        if let Some((percent, delay)) = last
            && (wave.percent <= percent || after <= delay)
        {
            return Err(BadInput(format!(
                "waves must rise in both percentage and delay: {}@{} follows {percent}@{}",
                wave.percent,
                wave.after,
                humantime::format_duration(delay)
            )));
        }
        last = Some((wave.percent, after));
    }
    match last {
        Some((100.0, _)) => Ok(()),
        Some(_) => Err(BadInput("the last wave must reach 100 (percent)".into())),
        None => Err(BadInput("no waves given".into())),
    }
}

/// A salt: printable text, at most 128 bytes (it is hashed between NUL separators).
pub fn check_salt(salt: &str) -> Result<(), BadInput> {
    if salt.is_empty() || salt.len() > 128 || salt.chars().any(char::is_control) {
        Err(BadInput(format!(
            "salt {salt:?} must be 1 to 128 bytes of printable text (no newline or control character)"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(percent: f64, waves: Option<Vec<Wave>>, started: SystemTime) -> Rollout {
        Rollout {
            tag: "v43".into(),
            sha256: "a".repeat(64),
            size: 1,
            salt: "v43".into(),
            percent,
            waves,
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            halted: false,
            halted_at: None,
            attempt_serial: 1,
        }
    }

    #[test]
    fn the_bucket_is_the_design_formula() {
        // sha256("bootlace-rollout\0v43\0i-0123456789abcdef0"), first 8 bytes, big endian.
        let digest = Sha256::digest(b"bootlace-rollout\0v43\0i-0123456789abcdef0");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000;
        assert_eq!(bucket("v43", "i-0123456789abcdef0"), expected);
        assert_ne!(bucket("v43", "i-1"), bucket("v44", "i-1"), "the salt reshuffles");
    }

    #[test]
    fn growing_the_percentage_only_adds_instances() {
        let ids: Vec<String> = (0..2000).map(|i| format!("i-{i:08x}")).collect();
        let steps = [0.0, 0.01, 1.0, 5.0, 10.0, 25.5, 50.0, 99.99, 100.0];
        for pair in steps.windows(2) {
            for id in &ids {
                let b = bucket("s", id);
                assert!(
                    !covers(pair[0], b) || covers(pair[1], b),
                    "{id} left at {}",
                    pair[1]
                );
            }
        }
        assert!(ids.iter().all(|id| covers(100.0, bucket("s", id))));
        assert!(!ids.iter().any(|id| covers(0.0, bucket("s", id))));
    }

    #[test]
    fn ten_percent_of_1000_random_ids_is_about_100() {
        let salt = format!("{:x}", fastrand::u64(..));
        let inside = (0..1000)
            .filter(|_| covers(10.0, bucket(&salt, &format!("i-{:017x}", fastrand::u64(..)))))
            .count();
        assert!((70..=130).contains(&inside), "{inside} of 1000 at 10 %");
    }

    #[test]
    fn waves_follow_the_clock_and_a_halt_freezes_them() {
        let start = humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let waves = parse_waves("1@0s,10@2h,50@1d,100@2d").unwrap();
        let mut r = rollout(0.0, Some(waves), start);
        assert_eq!(r.effective_percent(start), 1.0);
        assert_eq!(r.effective_percent(start + Duration::from_secs(7199)), 1.0);
        assert_eq!(r.effective_percent(start + Duration::from_secs(7200)), 10.0);
        assert_eq!(r.effective_percent(start + Duration::from_secs(2 * 86400)), 100.0);
        // The first wave is due at once, whatever the clocks say: a clock behind the
        // operator's sees it too.
        assert_eq!(r.effective_percent(start - Duration::from_secs(600)), 1.0);
        assert_eq!(
            r.next_wave(start + Duration::from_secs(60)),
            Some(start + Duration::from_secs(7200))
        );
        r.halted = true;
        r.percent = 10.0;
        assert_eq!(r.effective_percent(start + Duration::from_secs(3 * 86400)), 10.0);
        assert_eq!(r.next_wave(start), None);
    }

    #[test]
    fn bad_percentages_waves_and_salts_are_refused() {
        for bad in ["150", "-1", "abc", "NaN", "inf", ""] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        assert!(parse_percent("0.285").is_err(), "finer than a bucket");
        assert!(parse_percent("1e-3").is_err(), "no exponents");
        for good in ["0", "0.5", "100", "12.25"] {
            assert!(parse_percent(good).is_ok(), "{good}");
        }
        for bad in [
            "10@1h,1@2h,100@3h",
            "1@2h,10@1h,100@3h",
            "1@0s,50@1h",
            "1@0s,x@1h,100@2h",
            "1",
            "1@soon,100@1h",
        ] {
            assert!(parse_waves(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_waves(" 100@0s ").unwrap().len(), 1);
        assert!(check_salt("a\nb").is_err());
        assert!(check_salt("").is_err());
        assert!(check_salt("v43-canary").is_ok());
    }

    #[test]
    fn resuming_a_rollout_dated_near_the_end_of_time_stays_valid() {
        let start = humantime::parse_rfc3339("9999-06-01T00:00:00Z").unwrap();
        let mut r = rollout(10.0, Some(parse_waves("10@0s,100@1h").unwrap()), start);
        r.halted = true;
        r.halted_at = Some("2000-01-01T00:00:00Z".into());
        let pointer: Pointer = serde_json::from_value(serde_json::json!({
            "format_version": 2, "tag": "v42", "sha256": "b".repeat(64), "size": 1, "serial": 3,
            "updated_at": "2026-11-30T00:00:00Z", "updated_by": "t", "history": [], "rollout": r,
        }))
        .unwrap();
        let now = SystemTime::now();
        let resumed = apply(&pointer, Action::Resume, now)
            .unwrap()
            .unwrap()
            .rollout
            .unwrap();
        resumed.check().unwrap();
        assert_eq!(resumed.effective_percent(now), 10.0);
    }

    #[test]
    fn resuming_waves_near_the_year_cap_stays_a_valid_rollout() {
        let start = humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let mut r = rollout(0.0, Some(parse_waves("10@0s,50@364d,100@365d").unwrap()), start);
        r.percent = 10.0;
        r.halted = true;
        // Halted by a clock three days behind the promoter's.
        r.halted_at =
            Some(humantime::format_rfc3339_seconds(start - Duration::from_secs(3 * 86400)).to_string());
        let resumed = resumed(&r, start);
        resumed.check().unwrap();
        assert_eq!(resumed.effective_percent(start), 10.0);
    }

    #[test]
    fn resuming_from_a_clock_behind_the_halters_never_shrinks_a_rollout() {
        let start = humantime::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        let halted_at = start + Duration::from_secs(3 * 3600);
        let mut r = rollout(0.0, Some(parse_waves("1@0s,50@2h,70@4h,100@1d").unwrap()), start);
        r.percent = r.effective_percent(halted_at);
        assert_eq!(r.percent, 50.0);
        r.halted = true;
        r.halted_at = Some(humantime::format_rfc3339_seconds(halted_at).to_string());
        let pointer: Pointer = serde_json::from_value(serde_json::json!({
            "format_version": 2, "tag": "v42", "sha256": "b".repeat(64), "size": 1, "serial": 3,
            "updated_at": "2026-11-30T00:00:00Z", "updated_by": "t", "history": [], "rollout": r,
        }))
        .unwrap();
        // The resuming operator's clock is 2 h behind the halter's.
        let resuming = halted_at - Duration::from_secs(2 * 3600);
        let resumed = apply(&pointer, Action::Resume, resuming)
            .unwrap()
            .unwrap()
            .rollout
            .unwrap();
        resumed.check().unwrap();
        for skew in [0, 600, 3 * 3600] {
            // Instances with clocks behind the resumer's, too.
            let at = resuming - Duration::from_secs(skew);
            assert_eq!(resumed.effective_percent(at), 50.0, "{skew} s behind");
        }
        // The next wave comes the hour it had left when halted, after the resume.
        assert_eq!(
            resumed.effective_percent(resuming + Duration::from_secs(3599)),
            50.0
        );
        assert_eq!(
            resumed.effective_percent(resuming + Duration::from_secs(3600)),
            70.0
        );
        assert_eq!(
            resumed.effective_percent(resuming + Duration::from_secs(86400)),
            100.0
        );
    }
}
