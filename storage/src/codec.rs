//! Little binary encoding helpers shared by the WAL and the block index: unsigned varints,
//! length-prefixed strings, and a bounds-checked reading cursor.

/// Bytes of `v` as a varint ([`put_uvarint`]).
pub(crate) fn uvarint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// `v` with its sign in the lowest bit, so that small negative numbers are small too.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends a varint length and the bytes of `s`.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Starts a small checksummed file: `magic | version`; finish it with [`seal`].
pub(crate) fn sealed_header(magic: &[u8; 4], version: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    out.push(version);
    out
}

/// Appends the crc32c of everything before it.
pub(crate) fn seal(out: &mut Vec<u8>) {
    let crc = crc32c::crc32c(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// A cursor over the body of a file made by [`sealed_header`] and [`seal`], when its checksum,
/// magic and version are right.
pub(crate) fn open_sealed<'a>(data: &'a [u8], magic: &[u8; 4], version: u8) -> Option<Cursor<'a>> {
    let (body, crc) = data.split_at_checked(data.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut c = Cursor(body);
    if c.take(4)? != magic || c.take(1)? != [version] {
        return None;
    }
    Some(c)
}

/// A cursor over a byte slice; every read returns `None` past the end.
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl<'a> Cursor<'a> {
    /// Whether every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    /// An unsigned varint.
    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut out: u64 = 0;
        for i in 0..10 {
            let b = *self.take(1)?.first()?;
            out |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Some(out);
            }
        }
        None
    }

    /// A zigzag varint.
    pub(crate) fn varint(&mut self) -> Option<i64> {
        Some(unzigzag(self.uvarint()?))
    }

    /// A varint-length-prefixed UTF-8 string.
    pub(crate) fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.uvarint()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}
