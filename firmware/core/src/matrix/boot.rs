//! Boot: the token's state laid out in place, read back from flash or made new.
//!
//! The only module with `unsafe` code. A device keeps the token (tens of kilobytes) in a
//! static and boots it with [`Token::new_in`] into that static, field by field, so that no
//! thread needs a stack as large as the token: the account is made or unpickled in its field,
//! records are read into the token's own record buffer, tables start empty where they are.
//! Boot destructures the whole token in a pattern that names every field, so that a field
//! added to the token breaks the build until boot writes it.

use core::mem::MaybeUninit;

use heapless::{Deque, String, Vec};

use jeton_olm::olm::Account;

use super::account::{load_account_into, save_account};
use super::*;
use crate::coap::Client;
use crate::link::Link;
use crate::platform::Platform;

/// Writes `value()` into each element of the array at `array`, one element at a time (so that
/// at most one element passes through the stack).
///
/// # Safety
///
/// `array` must be valid for writes and aligned. What it held is overwritten, not dropped.
#[allow(unsafe_code)]
unsafe fn write_each<T, const N: usize>(array: *mut [T; N], value: impl Fn() -> T) {
    let first = array.cast::<T>();
    for index in 0..N {
        // SAFETY: `index < N`, so the element lies inside the array the caller vouches for.
        unsafe { first.add(index).write(value()) };
    }
}

/// What a boot reads (or makes) besides the Olm account, which it writes in place: the
/// transaction counter and the CoAP engine's seed, drawn in this order after the account's
/// (so that a seeded RNG gives the same token as before).
struct Boot {
    txn_prefix: u32,
    txn_next: u64,
    coap_rng: TransportRng,
}

impl Boot {
    /// Writes the flash handle (over `store`, its record buffer zeroed), `work` (zeroed) and the
    /// account (read from the store, or made and written to it first when there is none) with
    /// its Curve25519 key into `core`, in place: records are read into the token's own record
    /// buffer rather than a buffer on the stack, and the account is made or unpickled into its
    /// field. Not inlined, so that its frame (the pickle's decoding) is gone before the rest of
    /// the token's state is laid out.
    ///
    /// # Safety
    ///
    /// `core` must be valid for writes and aligned; what it held is overwritten, not dropped.
    /// On `Ok`, its flash handle, `work`, `account` and `curve_b64` are initialised; on `Err`,
    /// only `work` is (plain bytes: nothing to drop).
    #[allow(unsafe_code)]
    #[inline(never)]
    unsafe fn load_into<R: Rng, S: Store, U: Ui>(
        core: *mut Core<R, S, U>,
        key: [u8; 32],
        rng: &mut R,
        store: S,
    ) -> Result<Self, TokenError> {
        use core::ptr::addr_of_mut;

        // SAFETY: `core` is valid for writes and aligned (the caller vouches for it); writing
        // the handle and zeroes initialises these fields. The references cover one field
        // each, which nothing else refers to while boot runs; the account's is a
        // `MaybeUninit`, so it may (and does) start uninitialised.
        let (flash, slot) = unsafe {
            let flash = addr_of_mut!((*core).env.flash);
            flash.write(Flash::new(store, key));
            addr_of_mut!((*core).env.work).write_bytes(0, 1);
            let account = addr_of_mut!((*core).account.olm).cast::<MaybeUninit<_>>();
            (&mut *flash, &mut *account)
        };
        match Self::load_account(flash, slot, rng) {
            Ok((boot, curve_b64)) => {
                // SAFETY: as above; the key is not initialised yet, so nothing is dropped.
                unsafe { addr_of_mut!((*core).account.curve_b64).write(curve_b64) };
                Ok(boot)
            }
            Err(err) => {
                // SAFETY: the handle is initialised (above) and the reference to it is gone;
                // dropping it drops the store, as the caller expects on `Err`.
                unsafe { addr_of_mut!((*core).env.flash).drop_in_place() };
                Err(err)
            }
        }
    }

    /// Reads the account into `slot`, or makes one there, and the rest of a boot. On `Err`,
    /// `slot` is left uninitialised.
    fn load_account<R: Rng, S: Store>(
        flash: &mut Flash<S>,
        slot: &mut MaybeUninit<Account<ONE_TIME_KEYS>>,
        rng: &mut R,
    ) -> Result<(Self, String<44>), TokenError> {
        // Transfers live in RAM: what a power cut left half-written goes.
        if let Some(files) = flash.store.files() {
            files.discard_temporaries().map_err(TokenError::File)?;
        }
        let (account, created) = match load_account_into(flash, slot)? {
            Some(account) => (account, false),
            None => (create_account_in(slot, rng), true),
        };
        let booted = Self::after_account(flash, rng, account, created);
        if booted.is_err() {
            // SAFETY: the account is initialised (by one of the two arms above) and the
            // reference to it is gone; dropping it zeroizes its keys and leaves the slot as
            // the caller expects on `Err`.
            #[allow(unsafe_code)]
            unsafe {
                slot.assume_init_drop()
            };
        }
        booted
    }

    /// The rest of a boot once the account is in place: a new account is written to the
    /// store first, then the transaction counter is read (or drawn) and the CoAP engine's
    /// seed drawn.
    fn after_account<R: Rng, S: Store>(
        flash: &mut Flash<S>,
        rng: &mut R,
        account: &Account<ONE_TIME_KEYS>,
        created: bool,
    ) -> Result<(Self, String<44>), TokenError> {
        if created {
            save_account(flash, rng, account)?;
        }
        let (txn_prefix, txn_next) = match Numbering::load(flash)? {
            Some(found) => found,
            None => (rng.next_u32(), 0),
        };
        let mut curve = [0u8; 43];
        let curve_b64 = bounded(account.curve25519_key().to_base64(&mut curve))?;
        let boot = Boot {
            txn_prefix,
            txn_next,
            coap_rng: TransportRng::seeded_from(rng),
        };
        Ok((boot, curve_b64))
    }
}

/// A new Olm account, made in `slot`. Not inlined: given the slot by reference, the account
/// is made straight into it (its empty key list a memset there) rather than on the stack.
#[inline(never)]
fn create_account_in<'a, R: Rng>(
    slot: &'a mut MaybeUninit<Account<ONE_TIME_KEYS>>,
    rng: &mut R,
) -> &'a mut Account<ONE_TIME_KEYS> {
    slot.write(Account::new(&mut rng::CryptoSource(rng)))
}

impl<P: Platform, L: Link> Token<P, L> {
    /// Boots the token from what `store` holds: a fresh device (new Olm account, written
    /// before anything else) or the device as it was before the last power-off. A link that
    /// takes pairing material starts without any (plain CoAP); `Token::with_link` (feature
    /// `link`) gives it some.
    ///
    /// The token is built on the caller's stack and moved out; a device with little stack
    /// boots it into a static with [`Token::new_in`] instead.
    pub fn new(
        config: Config,
        rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<Self, TokenError> {
        Self::boot(config, L::Material::default(), rng, store, ui, now)
    }

    /// [`Token::new`] into `slot`, in place: the token's state (about 32 KB) is written
    /// field by field straight into `slot`, so that a device can keep it in a static and
    /// give its threads only the stack the crypto needs (the largest field passes through
    /// the stack, not the whole token). On an error `slot` is left uninitialised (what was
    /// already written to it is dropped).
    pub fn new_in(
        slot: &mut MaybeUninit<Self>,
        config: Config,
        rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<&mut Self, TokenError> {
        Self::boot_in(slot, config, L::Material::default(), rng, store, ui, now)
    }

    /// Boots a token with its link's pairing `material`, on the caller's stack.
    #[allow(unsafe_code)]
    fn boot(
        config: Config,
        material: L::Material,
        rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<Self, TokenError> {
        let mut slot = MaybeUninit::uninit();
        Self::boot_in(&mut slot, config, material, rng, store, ui, now)?;
        // SAFETY: `boot_in` returned Ok, so it initialised `slot`.
        Ok(unsafe { slot.assume_init() })
    }

    /// Boots a token with its link's pairing `material` into `slot`, in place (see
    /// [`Token::new_in`]).
    #[allow(unsafe_code)]
    fn boot_in(
        slot: &mut MaybeUninit<Self>,
        config: Config,
        material: L::Material,
        mut rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<&mut Self, TokenError> {
        let token = slot.as_mut_ptr();
        // SAFETY: `slot` is valid for writes and aligned for a `Token`, so its `core` is too.
        // On `Err` only plain bytes were written, and `slot` stays uninitialised.
        let boot = unsafe {
            Boot::load_into(
                core::ptr::addr_of_mut!((*token).core),
                config.storage_key,
                &mut rng,
                store,
            )
        }?;
        // SAFETY: as above; `write_unloaded` writes the fields `load_into` left.
        unsafe { Self::write_unloaded(token, config, rng, ui, boot) };
        // SAFETY: `load_into` and `write_unloaded` initialised every field of `slot`.
        let token = unsafe { slot.assume_init_mut() };
        Self::names_every_field(token);
        token.coap.deliver_every_registration(true);
        if let Err(err) = token.load(material, now) {
            // SAFETY: `slot` is initialised (above), and nothing has moved out of it.
            unsafe { slot.assume_init_drop() };
            return Err(err);
        }
        // SAFETY: `slot` is initialised (above) and `load` kept it so.
        let token = unsafe { slot.assume_init_mut() };
        token.drive(now);
        Ok(token)
    }

    /// Names the fields `Boot::load_into` and `write_unloaded` write, all of them, with the
    /// sub-states they lay out field by field: adding a field to the token breaks this
    /// pattern until boot writes it too. (Sub-states written whole are written by a struct
    /// expression, which the compiler checks in its own way.)
    fn names_every_field(token: &Self) {
        let Token {
            coap: _,
            link: _,
            core:
                Core {
                    env:
                        Env {
                            settings: _,
                            rng: _,
                            ui: _,
                            flash: _,
                            work: _,
                        },
                    account:
                        OwnAccount {
                            curve_b64: _,
                            server_one_time_keys: _,
                            one_time_keys_wanted: _,
                            fallback_wanted: _,
                            olm: _,
                        },
                    login: _,
                    sync: _,
                    operation: _,
                    backfill: _,
                    rooms:
                        Rooms {
                            invites: _,
                            joins: _,
                            slots: _,
                        },
                    devices:
                        Devices {
                            stale: _,
                            asked: _,
                            tracked: _,
                            slots: _,
                            removed: _,
                        },
                    sessions: _,
                    room_keys:
                        RoomKeys {
                            clock: _,
                            entries: _,
                            withheld: _,
                        },
                    pending_keys:
                        PendingKeys {
                            clock: _,
                            waiting: _,
                            retry: _,
                        },
                    outbox: _,
                    gateway: _,
                    verification: _,
                    calls: _,
                    transfer: _,
                    #[cfg(feature = "cross-signing")]
                        cross_signing: _,
                },
        } = token;
    }

    /// Writes the fields of `token` that [`Boot::load_into`] left: the booted transaction
    /// counter and CoAP engine, and everything else empty, one field at a time, so that at
    /// most one field passes through the stack. Not inlined, so that its frame is gone
    /// before `load` and the first `drive`.
    ///
    /// # Safety
    ///
    /// `token` must be valid for writes and aligned. What its fields other than those
    /// `Boot::load_into` wrote held is overwritten, not dropped.
    #[allow(unsafe_code)]
    #[inline(never)]
    unsafe fn write_unloaded(token: *mut Self, config: Config, rng: P::Rng, ui: P::Ui, boot: Boot) {
        use core::ptr::addr_of_mut;

        // SAFETY: `token` is valid for writes and aligned (the caller vouches for it). Each
        // write initialises one field without reading or dropping what was there before;
        // with `Boot::load_into`'s they initialise every field, as the pattern in `new_in`
        // (which lists them all) makes the compiler check. Everything but the account, the
        // transaction counter and the CoAP engine starts empty; `load` fills it in.
        unsafe {
            addr_of_mut!((*token).coap).write(Client::new(config.coap, boot.coap_rng));
            // Plain until `load` reads the link's material and context.
            addr_of_mut!((*token).link).write(L::unloaded());
            let core = addr_of_mut!((*token).core);
            // The storage key stays with the flash handle alone.
            addr_of_mut!((*core).env.settings).write(config.settings());
            addr_of_mut!((*core).env.rng).write(rng);
            addr_of_mut!((*core).env.ui).write(ui);
            addr_of_mut!((*core).login).write(None);
            addr_of_mut!((*core).sync).write(SyncLane::new());
            addr_of_mut!((*core).operation).write(OperationLane::new());
            addr_of_mut!((*core).backfill).write(Backfills::new());
            // The large tables one element at a time (see `write_each`).
            let rooms = addr_of_mut!((*core).rooms);
            addr_of_mut!((*rooms).invites).write(Vec::new());
            addr_of_mut!((*rooms).joins).write(Vec::new());
            write_each(addr_of_mut!((*rooms).slots), || None);
            let devices = addr_of_mut!((*core).devices);
            addr_of_mut!((*devices).stale).write(0);
            addr_of_mut!((*devices).asked).write(0);
            addr_of_mut!((*devices).tracked).write(Vec::new());
            write_each(addr_of_mut!((*devices).slots), || None);
            addr_of_mut!((*devices).removed).write(Deque::new());
            addr_of_mut!((*core).sessions).write(OlmSessions::new());
            let room_keys = addr_of_mut!((*core).room_keys);
            addr_of_mut!((*room_keys).clock).write(0);
            write_each(addr_of_mut!((*room_keys).entries), || None);
            addr_of_mut!((*room_keys).withheld).write(Vec::new());
            let pending = addr_of_mut!((*core).pending_keys);
            addr_of_mut!((*pending).clock).write(0);
            write_each(addr_of_mut!((*pending).waiting), || None);
            addr_of_mut!((*pending).retry).write(Vec::new());
            let txn = Numbering::booted(boot.txn_prefix, boot.txn_next);
            addr_of_mut!((*core).outbox).write(Outbox::new(txn));
            let account = addr_of_mut!((*core).account);
            addr_of_mut!((*account).one_time_keys_wanted).write(false);
            addr_of_mut!((*account).server_one_time_keys).write(0);
            addr_of_mut!((*account).fallback_wanted).write(false);
            addr_of_mut!((*core).gateway).write(Gateway::new());
            addr_of_mut!((*core).verification).write(Verifications::new());
            addr_of_mut!((*core).calls).write(super::calls::Calls::new());
            addr_of_mut!((*core).transfer).write(Transfers::new());
            #[cfg(feature = "cross-signing")]
            addr_of_mut!((*core).cross_signing).write(super::cross_signing::CrossSigning::new());
        }
    }

    /// Reads the login, the sync cursor, the devices, rooms, sessions and the outbox from
    /// the store into the token, in place. Not inlined, so that its frame is gone before the
    /// first `drive`.
    #[inline(never)]
    fn load(&mut self, material: L::Material, now: Instant) -> Result<(), TokenError> {
        let core = &mut self.core;
        let flash = &mut core.env.flash;
        let (mut store, scratch) = flash.sealed_store();
        self.link
            .load(material, &mut store, scratch, now)
            .map_err(Into::into)?;
        core.gateway.set_bound_to_link(self.link.is_enabled());
        core.login = Login::load(flash)?;
        core.sync.load(flash)?;
        core.devices.load(flash)?;
        core.rooms.load(flash, now)?;
        core.room_keys.load(flash, &core.rooms)?;
        core.pending_keys.load(flash)?;
        core.sessions.load(flash)?;
        core.outbox.load(flash)?;
        core.backfill.load(flash)?;
        Ok(())
    }
}

#[cfg(feature = "link")]
impl<P: Platform> Token<P, crate::link::ProtectedLink> {
    /// Boots a token whose exchanges with the gateway are protected ([`crate::link`]):
    /// `material` is its pairing material (its key pair and the gateway's credential, from
    /// `jeton pair`; `None`: plain CoAP). It resumes the security context on flash, or runs
    /// EDHOC first.
    pub fn with_link(
        config: Config,
        material: Option<crate::link::KeyFile>,
        rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<Self, TokenError> {
        Self::boot(config, material, rng, store, ui, now)
    }

    /// [`Token::with_link`] into `slot`, in place (see [`Token::new_in`]).
    pub fn with_link_in(
        slot: &mut MaybeUninit<Self>,
        config: Config,
        material: Option<crate::link::KeyFile>,
        rng: P::Rng,
        store: P::Store,
        ui: P::Ui,
        now: Instant,
    ) -> Result<&mut Self, TokenError> {
        Self::boot_in(slot, config, material, rng, store, ui, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter RNG, so that two boots from the same seed make the same keys.
    struct CountingRng(u8);
    impl Rng for CountingRng {
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for byte in dest {
                self.0 = self.0.wrapping_mul(5).wrapping_add(3);
                *byte = self.0;
            }
        }
    }

    struct Silent;
    impl Ui for Silent {
        fn event(&mut self, _: &UiEvent<'_>) {}
    }

    type SmallStore = crate::store::MemoryStore<16>;
    struct Small;
    impl Platform for Small {
        type Rng = CountingRng;
        type Store = SmallStore;
        type Ui = Silent;
    }
    type SmallToken = Token<Small>;

    fn boot_in(
        slot: &mut core::mem::MaybeUninit<SmallToken>,
        seed: u8,
        flash: SmallStore,
    ) -> Result<&mut SmallToken, TokenError> {
        let config = Config::new([3; 32]);
        Token::new_in(
            slot,
            config,
            CountingRng(seed),
            flash,
            Silent,
            Instant::ZERO,
        )
    }

    fn keys(token: &SmallToken) -> (String<44>, String<44>) {
        let identity = token.identity();
        (identity.curve25519, identity.ed25519)
    }

    #[test]
    fn a_token_booted_in_place_keeps_its_identity_and_logs_in() {
        let mut slot = Box::new(core::mem::MaybeUninit::uninit());
        let token = boot_in(&mut slot, 9, SmallStore::new()).unwrap();
        let identity = keys(token);
        assert!(token.store().contains(crate::store::record::ACCOUNT));
        token.login("alice", "secret", Instant::ZERO).unwrap();
        let mut datagram = [0u8; 1152];
        assert!(token.poll_transmit(Instant::ZERO, &mut datagram).is_some());

        // Another seed makes another account; a boot from the first one's flash reads its
        // account back, whatever the RNG.
        let mut other = Box::new(core::mem::MaybeUninit::uninit());
        assert_ne!(
            keys(boot_in(&mut other, 200, SmallStore::new()).unwrap()),
            identity
        );
        let flash = token.store().clone();
        let mut again = Box::new(core::mem::MaybeUninit::uninit());
        assert_eq!(keys(boot_in(&mut again, 200, flash).unwrap()), identity);
    }

    #[test]
    fn a_token_booted_in_place_reports_records_it_cannot_read() {
        let mut first = Box::new(core::mem::MaybeUninit::uninit());
        let flash = boot_in(&mut first, 9, SmallStore::new())
            .unwrap()
            .store()
            .clone();
        // The account is read into the slot first, the transaction counter once the account
        // is in place (which is dropped again), the login after the whole slot is written.
        let mut slot = Box::new(core::mem::MaybeUninit::uninit());
        for damaged in [
            crate::store::record::ACCOUNT,
            crate::store::record::TRANSACTIONS,
            crate::store::record::LOGIN,
        ] {
            let mut broken = flash.clone();
            broken.put(damaged, b"not a record jeton wrote").unwrap();
            let err = boot_in(&mut slot, 9, broken).map(drop).unwrap_err();
            assert_eq!(err, TokenError::CorruptRecord(damaged));
            // The slot stays usable after the error.
            assert!(boot_in(&mut slot, 9, flash.clone()).is_ok());
        }
    }
}
