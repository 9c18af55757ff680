//! Walking the entries of a decoded tar stream under the unpack policy: every entry is
//! checked before the visitor sees it, and the bytes the `tar` crate reads between two
//! entries (headers, GNU long names, PAX records) are capped, because it reads those
//! into memory whole.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use super::policy::{Checked, Checker, Limits, PolicyError, Totals};

/// Header bytes allowed between two entries' data: the header, long names and PAX
/// records together. Real archives need a few KiB at most.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("does not decode: {0}")]
    Decode(io::Error),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("an entry's headers (long names or PAX records) exceed {MAX_HEADER_BYTES} bytes")]
    OversizedHeader,
    #[error("{0}")]
    Write(io::Error),
}

/// Reads `decoded` as tar, checks each entry, and hands it to `visit`, which may read
/// its data. Once the whole archive has passed, reads the decoded stream to its end
/// (which makes the decoder check its own checksum) and returns the totals.
pub fn walk<R: Read>(
    decoded: R,
    limits: Limits,
    mut visit: impl FnMut(&Checked, &mut tar::Entry<'_, Budgeted<R>>) -> io::Result<()>,
) -> Result<Totals, EntryError> {
    let budget = Rc::new(Cell::new(MAX_HEADER_BYTES));
    let mut archive = tar::Archive::new(Budgeted {
        inner: decoded,
        budget: budget.clone(),
    });
    let mut checker = Checker::new(limits);
    let mut entries = archive.entries().map_err(EntryError::Decode)?;
    loop {
        budget.set(MAX_HEADER_BYTES);
        let Some(entry) = entries.next() else { break };
        let mut entry = entry.map_err(|e| decode_error(e, &budget))?;
        budget.set(u64::MAX);
        let entry_type = entry.header().entry_type();
        if entry_type == tar::EntryType::XGlobalHeader {
            checker.count()?;
            continue;
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let checked = checker.check(&entry.path_bytes(), entry_type, entry.size(), link.as_deref())?;
        visit(&checked, &mut entry).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => EntryError::Decode(e),
            _ => EntryError::Write(e),
        })?;
    }
    let totals = checker.finish()?;
    budget.set(u64::MAX);
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(EntryError::Decode)?;
    Ok(totals)
}

fn decode_error(err: io::Error, budget: &Cell<u64>) -> EntryError {
    if budget.get() == 0 {
        EntryError::OversizedHeader
    } else {
        EntryError::Decode(err)
    }
}

/// A reader that fails once its budget is spent; the budget is lifted while an entry's
/// data is read.
pub struct Budgeted<R> {
    inner: R,
    budget: Rc<Cell<u64>>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.get();
        if left == 0 {
            return Err(io::Error::other("header budget spent"));
        }
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.budget.set(left - n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_long_name_is_refused_without_reading_it_whole() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(8 << 20);
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        builder.append(&header, io::repeat(b'a').take(8 << 20)).unwrap();
        let archive = builder.into_inner().unwrap();
        let err = walk(&archive[..], Limits::default(), |_, _| Ok(())).unwrap_err();
        assert!(matches!(err, EntryError::OversizedHeader), "{err}");
    }

    #[test]
    fn pax_size_desync_is_read_as_pax_says_and_checked() {
        // CVE-2026-33055: a PAX size that disagrees with the header. The tar crate
        // follows PAX, as GNU tar does; whatever hides in the gap is still an entry
        // that the policy sees.
        let mut builder = tar::Builder::new(Vec::new());
        let mut pax = tar::Header::new_ustar();
        let records = b"10 size=0\n";
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(records.len() as u64);
        pax.set_path("pax").unwrap();
        pax.set_cksum();
        builder.append(&pax, &records[..]).unwrap();
        // The header claims 512 bytes of data, which is really a hidden entry.
        let mut hidden = tar::Header::new_gnu();
        hidden.set_entry_type(tar::EntryType::Symlink);
        hidden.as_gnu_mut().unwrap().name[..4].copy_from_slice(b"evil");
        hidden.set_link_name("/etc").unwrap();
        hidden.set_size(0);
        hidden.set_cksum();
        let mut outer = tar::Header::new_gnu();
        outer.set_path("innocent").unwrap();
        outer.set_size(512);
        outer.set_cksum();
        builder.append(&outer, &hidden.as_bytes()[..]).unwrap();
        let archive = builder.into_inner().unwrap();
        let err = walk(&archive[..], Limits::default(), |_, _| Ok(())).unwrap_err();
        assert!(
            matches!(err, EntryError::Policy(PolicyError::AbsoluteLink { .. })),
            "{err}"
        );
    }
}
