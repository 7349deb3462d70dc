//! The devices of the people the token talks to: the tracked users, and each of their devices
//! whose keys the token checked, on flash in [`record::DEVICES`].
//!
//! A user is tracked while the token shares a room with them, while a verification with them
//! runs, and while one of their devices is verified; the token's own user from the login. The
//! rest are let go after every sync ([`super::lifecycles`]): a stranger's verification request
//! holds a slot only until the verification ends. A tracked user's devices are asked for
//! (`keys/query`) when the user is new, when a sync lists them under `device_lists.changed`,
//! and when a member's room key arrives from a device not known yet.
//!
//! An answer's devices are kept when their self-signature verifies over the canonical JSON and
//! their ids match, and the person sees each new one ([`UiEvent::NewDevice`]). A device id that
//! comes back with other keys is rejected ([`RejectionReason::KeysChanged`]), and so is one that
//! was removed and returns with other keys: the table remembers the last
//! [`MAX_REMOVED_DEVICES`] removed devices by their keys. A device the homeserver no longer
//! lists is removed ([`UiEvent::DeviceRemoved`]). A removed or changed device ends the outbound
//! sessions it received, and its slot is forgotten by every outbound session and by the Olm
//! table ([`super::outbound`]); a user with a new device gets new outbound sessions in the
//! rooms they are in. A device verified by SAS ([`super::verification`]) is marked here, on
//! flash before the person is told.
//!
//! Devices are found by user and device id (commands, verification) or by user and
//! Curve25519 identity key (the sender of an Olm message, whose payload names no device).
//!
//! Where the table's rules go next: cross-signing keys per user (issue 13).

use heapless::{Deque, String, Vec};
use minicbor::Decoder;
use minicbor::data::Type;

use jeton_proto::TableVersion;
use jeton_proto::view::{DeviceKeys, KeysQueryResponse};

use super::bodies::{binary32, verify_object};
use super::flash::{Flash, bytes32, corrupt, text};
use super::room_keys::fnv;
use super::*;
use crate::store::record;

/// A device of a tracked user whose self-signature verified.
#[derive(Clone, Debug)]
pub(super) struct Device {
    pub(super) user_id: UserId,
    pub(super) device_id: DeviceId,
    pub(super) curve: [u8; 32],
    pub(super) ed: [u8; 32],
    /// Verified by SAS with these keys (a device whose keys change is rejected).
    pub(super) verified: bool,
}

/// A device removed from the table, remembered by its ids and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Removed {
    /// [`fnv`] of the user id, a zero byte and the device id.
    id: u32,
    /// The first bytes of its Ed25519 key.
    ed: [u8; 8],
}

impl Removed {
    fn of(user: &str, device_id: &str, ed: &[u8; 32]) -> Self {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(ed.get(..8).unwrap_or(&[0; 8]));
        Removed {
            id: device_hash(user, device_id),
            ed: prefix,
        }
    }
}

/// [`fnv`] of a user id, a zero byte and a device id.
fn device_hash(user: &str, device_id: &str) -> u32 {
    // FNV-1a over the zero byte is a multiplication alone.
    let hash = fnv(user.as_bytes()).wrapping_mul(0x0100_0193);
    device_id.bytes().fold(hash, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The tracked users and their devices. Boot lays the table out in place
/// ([`super::boot`]), so its fields are visible there; everything else goes through the
/// methods.
#[derive(Debug)]
pub(super) struct Devices {
    /// Bit `i`: the devices of `tracked[i]` need a keys/query.
    pub(super) stale: u32,
    /// Bit `i`: `tracked[i]` is in the keys/query in flight.
    pub(super) asked: u32,
    pub(super) tracked: Vec<UserId, MAX_TRACKED_USERS>,
    pub(super) slots: [Option<Device>; MAX_DEVICES],
    /// The devices removed last.
    pub(super) removed: Deque<Removed, MAX_REMOVED_DEVICES>,
}

/// What a device of a keys/query answer does to the table.
enum Merged {
    /// Known with the same keys, in this slot.
    Known(usize),
    /// New, in this slot.
    New(usize),
    /// Known with other keys: rejected.
    KeysChanged,
    /// New, and the table is full.
    Full,
}

/// Removes the bit of index `index` from `mask`, moving the bits above it down by one.
fn remove_bit(mask: u32, index: usize) -> u32 {
    let below = mask & ((1u32 << index) - 1);
    let above = mask.checked_shr(index as u32 + 1).unwrap_or(0) << index;
    below | above
}

/// A device's keys in a keys/query answer, after the checks.
enum Checked {
    /// Its Ed25519 and Curve25519 keys.
    Valid {
        ed: [u8; 32],
        curve: [u8; 32],
    },
    Rejected(RejectionReason),
}

impl Devices {
    /// No users, no devices (boot lays the table out in place instead).
    #[cfg(test)]
    fn new() -> Self {
        Devices {
            stale: 0,
            asked: 0,
            tracked: Vec::new(),
            slots: [const { None }; MAX_DEVICES],
            removed: Deque::new(),
        }
    }

    /// Marks `user`'s devices for a query, tracking the user first if needed.
    pub(super) fn track(&mut self, user: &str) -> Result<(), TokenError> {
        let Ok(user) = bounded::<MAX_ID_LEN>(user) else {
            return Ok(());
        };
        if !self.tracked.contains(&user) && self.tracked.push(user.clone()).is_err() {
            return Err(TokenError::LimitReached(Limit::TrackedUsers));
        }
        if let Some(index) = self.tracked.iter().position(|t| *t == user) {
            self.stale |= 1 << index;
        }
        Ok(())
    }

    /// Whether `user` is tracked.
    pub(super) fn is_tracked(&self, user: &str) -> bool {
        self.tracked.iter().any(|t| t.as_str() == user)
    }

    /// Whether some tracked user's devices need a query.
    pub(super) fn needs_query(&self) -> bool {
        self.stale != 0
    }

    /// Users tracked.
    pub(super) fn tracked_len(&self) -> usize {
        self.tracked.len()
    }

    /// Devices known.
    pub(super) fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Stops tracking the user at `index`: their devices leave the table, remembered by their
    /// keys. The slots freed, as bits.
    pub(super) fn untrack(&mut self, index: usize) -> u32 {
        if index >= self.tracked.len() {
            return 0;
        }
        let user = self.tracked.remove(index);
        self.stale = remove_bit(self.stale, index);
        self.asked = remove_bit(self.asked, index);
        let mut freed = 0;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if let Some(device) = entry.as_ref().filter(|d| d.user_id == user) {
                let removed = Removed::of(&device.user_id, &device.device_id, &device.ed);
                remember(&mut self.removed, removed);
                *entry = None;
                freed |= 1 << slot;
            }
        }
        freed
    }

    /// The `keys/query` body for the users whose devices need one, into `out`: its length.
    /// Those users are the ones the answer is for.
    pub(super) fn query_body(&mut self, out: &mut [u8]) -> Result<usize, TokenError> {
        let stale = self.stale;
        self.asked = stale;
        let users: Vec<&str, MAX_TRACKED_USERS> = self
            .tracked
            .iter()
            .enumerate()
            .filter(|(index, _)| stale & (1 << index) != 0)
            .map(|(_, user)| user.as_str())
            .collect();
        Ok(jeton_proto::write::keys_query_body(out, &users, 10_000)?)
    }

    /// The users the query just answered was for; they are not stale any more (unless they
    /// became stale again since it was sent, and are still marked).
    fn take_asked(&mut self) -> Vec<UserId, MAX_TRACKED_USERS> {
        let asked = core::mem::take(&mut self.asked);
        self.stale &= !asked;
        self.tracked
            .iter()
            .enumerate()
            .filter(|(index, _)| asked & (1 << index) != 0)
            .map(|(_, user)| user.clone())
            .collect()
    }

    /// The device in slot `slot`.
    pub(super) fn get(&self, slot: usize) -> Option<&Device> {
        self.slots.get(slot)?.as_ref()
    }

    /// The devices with their slots.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Device)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, device)| Some((slot, device.as_ref()?)))
    }

    /// Device `device_id` of `user`.
    pub(super) fn find(&self, user: &str, device_id: &str) -> Option<&Device> {
        self.slots
            .iter()
            .flatten()
            .find(|d| d.user_id.as_str() == user && d.device_id.as_str() == device_id)
    }

    /// The device of `user` whose Curve25519 identity key is `curve`: how an Olm message's
    /// sender is found (the spec's Olm payload carries no device id).
    pub(super) fn find_by_curve(&self, user: &str, curve: &[u8; 32]) -> Option<&Device> {
        self.slots
            .iter()
            .flatten()
            .find(|d| d.user_id.as_str() == user && d.curve == *curve)
    }

    /// Whether the device of `user` with Curve25519 key `curve` was verified.
    pub(super) fn is_verified_by_curve(&self, user: &str, curve: &[u8; 32]) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|d| d.verified && d.user_id.as_str() == user && d.curve == *curve)
    }

    /// Marks device `device_id` of `user` as verified (in RAM; [`Devices::save`] after): its
    /// slot, if the token knows it.
    pub(super) fn set_verified(&mut self, user: &str, device_id: &str) -> Option<usize> {
        let slot = self.slots.iter().position(|d| {
            d.as_ref()
                .is_some_and(|d| d.user_id.as_str() == user && d.device_id.as_str() == device_id)
        })?;
        if let Some(Some(device)) = self.slots.get_mut(slot) {
            device.verified = true;
        }
        Some(slot)
    }

    /// Takes device `device_id` of `user` with keys `ed` and `curve` from a keys/query answer.
    fn merge(
        &mut self,
        user: &UserId,
        device_id: &str,
        ed: [u8; 32],
        curve: [u8; 32],
    ) -> Result<Merged, TokenError> {
        let existing = self.slots.iter().position(|d| {
            d.as_ref()
                .is_some_and(|d| d.user_id == *user && d.device_id.as_str() == device_id)
        });
        if let Some(slot) = existing {
            let same = self
                .get(slot)
                .is_some_and(|d| d.ed == ed && d.curve == curve);
            return Ok(if same {
                Merged::Known(slot)
            } else {
                Merged::KeysChanged
            });
        }
        // A device removed earlier that comes back with other keys is a changed device.
        let id = device_hash(user, device_id);
        let returning = Removed::of(user, device_id, &ed);
        if self
            .removed
            .iter()
            .any(|r| r.id == id && r.ed != returning.ed)
        {
            return Ok(Merged::KeysChanged);
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Ok(Merged::Full);
        };
        let mut kept = Deque::new();
        for removed in self.removed.iter().filter(|r| r.id != id) {
            let _ = kept.push_back(*removed);
        }
        self.removed = kept;
        if let Some(entry) = self.slots.get_mut(slot) {
            *entry = Some(Device {
                user_id: user.clone(),
                device_id: bounded(device_id)?,
                curve,
                ed,
                verified: false,
            });
        }
        Ok(Merged::New(slot))
    }

    /// Takes out the device in `slot` if it is one of `user`'s the answer did not list
    /// (`seen`: bit `i` for slot `i`), remembered by its keys.
    fn take_unseen(&mut self, user: &UserId, seen: u32, slot: usize) -> Option<Device> {
        if seen & (1 << slot) != 0 {
            return None;
        }
        let entry = self.slots.get_mut(slot)?;
        if entry.as_ref().is_none_or(|d| d.user_id != *user) {
            return None;
        }
        let device = entry.take()?;
        remember(
            &mut self.removed,
            Removed::of(&device.user_id, &device.device_id, &device.ed),
        );
        Some(device)
    }

    /// Writes the table to flash.
    pub(super) fn save<S: Store>(&self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        let (tracked, devices, removed) = (&self.tracked, &self.slots, &self.removed);
        flash.put(record::DEVICES, |e| {
            e.array(3)?.array(tracked.len() as u64)?;
            for user in tracked {
                e.str(user)?;
            }
            e.array(MAX_DEVICES as u64)?;
            for slot in devices {
                match slot {
                    None => {
                        e.null()?;
                    }
                    Some(d) => {
                        e.array(5)?
                            .str(&d.user_id)?
                            .str(&d.device_id)?
                            .bytes(&d.curve)?
                            .bytes(&d.ed)?
                            .bool(d.verified)?;
                    }
                }
            }
            e.array(removed.len() as u64)?;
            for r in removed {
                e.array(2)?.u32(r.id)?.bytes(&r.ed)?;
            }
            Ok(())
        })
    }

    /// Reads the table from flash.
    pub(super) fn load<S: Store>(&mut self, flash: &mut Flash<S>) -> Result<(), TokenError> {
        let id = record::DEVICES;
        let Some((meta, _)) = flash.get(id)? else {
            return Ok(());
        };
        let c = corrupt(id);
        let mut d = Decoder::new(meta);
        // Two parts before removed devices were remembered, three since.
        let parts = d.array().map_err(&c)?.unwrap_or(0);
        let users = d.array().map_err(&c)?.unwrap_or(0);
        for _ in 0..users {
            self.tracked
                .push(text(&mut d, id)?)
                .map_err(|_| TokenError::CorruptRecord(id))?;
        }
        let slots = d.array().map_err(&c)?.unwrap_or(0);
        for slot in self.slots.iter_mut().take(slots as usize) {
            if d.datatype().map_err(&c)? == Type::Null {
                d.null().map_err(&c)?;
                continue;
            }
            // Four fields before verification existed, five since.
            let fields = d.array().map_err(&c)?.unwrap_or(0);
            *slot = Some(Device {
                user_id: text(&mut d, id)?,
                device_id: text(&mut d, id)?,
                curve: bytes32(&mut d, id)?,
                ed: bytes32(&mut d, id)?,
                verified: fields > 4 && d.bool().map_err(&c)?,
            });
        }
        if parts > 2 {
            for _ in 0..d.array().map_err(&c)?.unwrap_or(0) {
                d.array().map_err(&c)?;
                let id = d.u32().map_err(&c)?;
                let ed = d
                    .bytes()
                    .map_err(&c)?
                    .try_into()
                    .map_err(|_| TokenError::CorruptRecord(record::DEVICES))?;
                remember(&mut self.removed, Removed { id, ed });
            }
        }
        Ok(())
    }
}

/// Adds `removed` to the devices remembered, forgetting the oldest when full.
fn remember(list: &mut Deque<Removed, MAX_REMOVED_DEVICES>, removed: Removed) {
    if list.is_full() {
        list.pop_front();
    }
    let _ = list.push_back(removed);
}

/// The keys of device `device_id` of `user` in a keys/query answer, checked: both keys
/// present, the ids the object names, and its self-signature (over the canonical JSON, written
/// into `scratch`).
fn checked_keys(
    user: &str,
    device_id: &str,
    keys: &DeviceKeys<'_>,
    scratch: &mut [u8],
) -> Result<Checked, TokenError> {
    let mut name: String<{ MAX_DEVICE_ID_LEN + 11 }> = String::new();
    let _ = name.push_str("ed25519:");
    let _ = name.push_str(device_id);
    let ed = keys.key(&name)?.and_then(binary32);
    name.clear();
    let _ = name.push_str("curve25519:");
    let _ = name.push_str(device_id);
    let curve = keys.key(&name)?.and_then(binary32);
    let ids_match = keys.user_id()? == user && keys.device_id()? == device_id;
    let (Some(ed), Some(curve), true) = (ed, curve, ids_match) else {
        return Ok(Checked::Rejected(RejectionReason::Malformed));
    };
    name.clear();
    let _ = name.push_str("ed25519:");
    let _ = name.push_str(device_id);
    let signature = keys.signature(user, &name)?;
    if !verify_object(keys.0, signature, &ed, scratch) {
        return Ok(Checked::Rejected(RejectionReason::BadSignature));
    }
    Ok(Checked::Valid { ed, curve })
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    /// Adds user `user` to the tracked users, marking its devices for a query.
    pub(super) fn track(&mut self, user: &str) {
        if let Err(error) = self.devices.track(user) {
            self.error(error);
        }
    }

    /// Reads a keys/query answer: each device's self-signature is checked, and the users'
    /// verified devices replace the old ones. A device id seen before with other keys is
    /// rejected.
    #[inline(never)]
    pub(super) fn on_keys_query(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let response = KeysQueryResponse::parse(body, TableVersion::V2)?;
        let stale = self.devices.take_asked();
        // Bit `i`: `stale[i]` has a new device (a bit mask rather than a second list of ids:
        // 820 B less stack under the signature checks).
        let mut rotate: u32 = 0;
        for (index, user) in stale.iter().enumerate() {
            if self.merge_devices_of(&response, user)? {
                rotate |= 1 << index;
            }
        }
        self.devices.save(&mut self.env.flash)?;
        // A new device in a room: its outbound session is replaced before the next message.
        for (index, user) in stale.iter().enumerate() {
            if rotate & (1 << index) != 0 {
                self.rotate_rooms_of(user)?;
            }
        }
        // The keys waiting for these users' devices are decided, and the keys of removed
        // devices go.
        self.pending_keys
            .note_queried(stale.iter().map(|user| fnv(user.as_bytes())));
        self.settle_pending_keys(false)?;
        self.sweep_room_keys()
    }

    /// Takes the devices a keys/query answer lists for `user`: true when one is new.
    fn merge_devices_of(
        &mut self,
        response: &KeysQueryResponse<'_>,
        user: &UserId,
    ) -> Result<bool, TokenError> {
        // The token's own device is not a device of the table.
        let own_device = self
            .login
            .as_ref()
            .filter(|l| l.user_id == *user)
            .map(|l| l.device_id.as_str());
        let mut seen: u32 = 0;
        let mut new = false;
        for entry in response.devices(user)? {
            let (device_id, keys) = entry?;
            if own_device == Some(device_id) {
                continue;
            }
            let rejected = |reason| UiEvent::DeviceRejected {
                user_id: user,
                device_id,
                reason,
            };
            let (ed, curve) =
                match checked_keys(user, device_id, &keys, &mut self.env.flash.scratch)? {
                    Checked::Valid { ed, curve } => (ed, curve),
                    Checked::Rejected(reason) => {
                        self.env.ui.event(&rejected(reason));
                        continue;
                    }
                };
            match self.devices.merge(user, device_id, ed, curve)? {
                Merged::Known(slot) => seen |= 1 << slot,
                Merged::New(slot) => {
                    // A slot reused for another device: nothing remembers the old one.
                    self.rooms.forget_device(slot);
                    self.sessions.forget_device(slot);
                    seen |= 1 << slot;
                    new = true;
                    self.env.ui.event(&UiEvent::NewDevice {
                        user_id: user,
                        device_id,
                    });
                }
                // Not seen: the device with its old keys is removed below, remembered by them,
                // so that the new ones stay refused.
                Merged::KeysChanged => self.env.ui.event(&rejected(RejectionReason::KeysChanged)),
                Merged::Full => self.env.error(TokenError::LimitReached(Limit::Devices)),
            }
        }
        // Devices the server no longer lists are gone.
        for slot in 0..MAX_DEVICES {
            if let Some(device) = self.devices.take_unseen(user, seen, slot) {
                self.env.ui.event(&UiEvent::DeviceRemoved {
                    user_id: &device.user_id,
                    device_id: &device.device_id,
                });
                self.drop_device_slot(slot)?;
            }
        }
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_device_table_written_before_verification_existed_reads_as_unverified() {
        let mut flash = Flash::new(MemoryStore::<16>::new(), [0; 32]);
        // The four-field device entry the token wrote before SAS verification.
        flash
            .put(record::DEVICES, |e| {
                e.array(2)?.array(1)?.str("@a:s")?.array(1)?;
                e.array(4)?
                    .str("@a:s")?
                    .str("DEV")?
                    .bytes(&[1; 32])?
                    .bytes(&[2; 32])?;
                Ok(())
            })
            .unwrap();
        let mut devices = Devices::new();
        devices.load(&mut flash).unwrap();
        let device = devices.find("@a:s", "DEV").unwrap();
        assert!(!device.verified);

        // Verified, written and read back.
        devices.set_verified("@a:s", "DEV");
        devices.save(&mut flash).unwrap();
        let mut again = Devices::new();
        again.load(&mut flash).unwrap();
        assert!(again.find("@a:s", "DEV").unwrap().verified);
        assert!(again.get(1).is_none());
    }
}
