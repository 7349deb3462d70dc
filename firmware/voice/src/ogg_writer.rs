//! The Ogg framing of the stream (RFC 3533 pages, laid out for Opus as RFC 7845 asks): the
//! page being filled, its lacing values and body, the stream's serial number and page
//! sequence. A page leaves through the sink as soon as the next packet would not fit it, or
//! when it holds a second of audio, so the recorder never holds more than one page.

use crc::{Algorithm, Crc, NoTable};

use crate::{Error, Sink};

/// Bytes of packet data one page holds.
pub(crate) const PAGE_BODY: usize = 2048;
/// Packets on one page at most: a second of 20 ms frames.
const PAGE_PACKETS: u8 = 50;
/// The lacing table's size, fixed by the format.
const MAX_SEGMENTS: usize = 255;
const HEADER_LEN: usize = 27;

const FIRST_PAGE: u8 = 0x02;
const LAST_PAGE: u8 = 0x04;

/// Ogg's CRC-32: polynomial 0x04c11db7, MSB first, no initial or final inversion.
const OGG_CRC: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
};
/// Bitwise, without a table: a page a second costs little time and the table 1 KiB of flash.
static CRC: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&OGG_CRC);

pub(crate) struct PageWriter {
    serial: u32,
    sequence: u32,
    granule: u64,
    packets: u8,
    segments: usize,
    lacing: [u8; MAX_SEGMENTS],
    body_len: usize,
    body: [u8; PAGE_BODY],
}

impl PageWriter {
    pub(crate) const fn new() -> Self {
        Self {
            serial: 0,
            sequence: 0,
            granule: 0,
            packets: 0,
            segments: 0,
            lacing: [0; MAX_SEGMENTS],
            body_len: 0,
            body: [0; PAGE_BODY],
        }
    }

    /// Starts a new logical stream with the given serial number.
    pub(crate) fn begin(&mut self, serial: u32) {
        self.serial = serial;
        self.sequence = 0;
        self.clear();
    }

    /// Writes one of the two header packets on a page of its own (RFC 7845 section 3).
    /// Returns the bytes sent, as do the other methods that may send a page.
    pub(crate) fn header_page<S: Sink>(
        &mut self,
        packet: &[u8],
        sink: &mut S,
    ) -> Result<u64, Error<S::Error>> {
        let flags = if self.sequence == 0 { FIRST_PAGE } else { 0 };
        self.append(packet, 0);
        self.flush(flags, sink)
    }

    /// Adds an audio packet whose last sample ends at `granule` (48 kHz samples since the
    /// stream's start), sending the current page first when the packet would not fit it.
    pub(crate) fn packet<S: Sink>(
        &mut self,
        packet: &[u8],
        granule: u64,
        sink: &mut S,
    ) -> Result<u64, Error<S::Error>> {
        let full = self.packets == PAGE_PACKETS
            || self.body_len + packet.len() > PAGE_BODY
            || self.segments + segments_of(packet.len()) > MAX_SEGMENTS;
        let sent = if full { self.flush(0, sink)? } else { 0 };
        self.append(packet, granule);
        Ok(sent)
    }

    /// Sends the last page, marked as such, with the final position `granule`, which may
    /// stop short of its last packet's end to trim the padding (RFC 7845 section 4.4).
    pub(crate) fn finish<S: Sink>(
        &mut self,
        granule: u64,
        sink: &mut S,
    ) -> Result<u64, Error<S::Error>> {
        self.granule = granule;
        self.flush(LAST_PAGE, sink)
    }

    /// Puts a packet on the page. The callers keep packets within what a page holds: a
    /// header packet is short and an audio packet at most `MAX_PACKET` bytes.
    fn append(&mut self, packet: &[u8], granule: u64) {
        let mut left = packet.len();
        loop {
            let lace = left.min(255);
            self.lacing[self.segments] = lace as u8;
            self.segments += 1;
            left -= lace;
            if lace < 255 {
                break;
            }
        }
        self.body[self.body_len..self.body_len + packet.len()].copy_from_slice(packet);
        self.body_len += packet.len();
        self.packets += 1;
        self.granule = granule;
    }

    fn flush<S: Sink>(&mut self, flags: u8, sink: &mut S) -> Result<u64, Error<S::Error>> {
        let mut header = [0u8; HEADER_LEN + MAX_SEGMENTS];
        header[..4].copy_from_slice(b"OggS");
        header[5] = flags;
        header[6..14].copy_from_slice(&self.granule.to_le_bytes());
        header[14..18].copy_from_slice(&self.serial.to_le_bytes());
        header[18..22].copy_from_slice(&self.sequence.to_le_bytes());
        header[26] = self.segments as u8;
        let header_len = HEADER_LEN + self.segments;
        header[HEADER_LEN..header_len].copy_from_slice(&self.lacing[..self.segments]);
        let mut crc = CRC.digest();
        crc.update(&header[..header_len]);
        crc.update(&self.body[..self.body_len]);
        header[22..26].copy_from_slice(&crc.finalize().to_le_bytes());
        sink.write(&header[..header_len]).map_err(Error::Sink)?;
        sink.write(&self.body[..self.body_len])
            .map_err(Error::Sink)?;
        self.sequence = self.sequence.wrapping_add(1);
        let sent = (header_len + self.body_len) as u64;
        self.clear();
        Ok(sent)
    }

    fn clear(&mut self) {
        self.packets = 0;
        self.segments = 0;
        self.body_len = 0;
    }
}

/// Lacing values a packet of `len` bytes takes.
fn segments_of(len: usize) -> usize {
    len / 255 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_oggs() {
        assert_eq!(CRC.checksum(b"123456789"), OGG_CRC.check);
    }
}
