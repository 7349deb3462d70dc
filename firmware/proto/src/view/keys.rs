//! The views of the key endpoints' responses: `keys/upload`, `keys/claim` and `keys/query` with
//! the devices and signed keys in them.

use super::{
    Binary, Entries, Located, MAX_DEVICES_PER_USER, MAX_SMALL_MAP, Map, ViewError, root_map,
};
use crate::TableVersion;

/// The response to `keys/upload`: `one_time_key_counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysUploadResponse<'a>(pub Map<'a>);

impl<'a> KeysUploadResponse<'a> {
    /// Views a keys/upload response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// How many one-time keys of `algorithm` the server holds for the device (absent = 0).
    pub fn one_time_key_count(&self, algorithm: &str) -> Result<i64, ViewError> {
        let Some(counts) = self.0.optional_map("one_time_key_counts")? else {
            return Ok(0);
        };
        counts.bounded(MAX_SMALL_MAP)?;
        counts.located(algorithm)?.map_or(Ok(0), Located::integer)
    }
}

/// A signed key object: `{key, signatures}` of a one-time or fallback key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedKey<'a> {
    /// The key id, e.g. `signed_curve25519:AAAAHg`.
    pub key_id: &'a str,
    /// The Curve25519 public key.
    pub key: Binary<'a>,
    /// The signed object, for the caller to check `signatures.<user>.ed25519:<device>` over its
    /// canonical JSON.
    pub object: Map<'a>,
}

impl<'a> SignedKey<'a> {
    /// The signature by `user_id`'s key `ed25519:<device_id>`, given as `key_name`.
    pub fn signature(
        &self,
        user_id: &str,
        key_name: &str,
    ) -> Result<Option<Binary<'a>>, ViewError> {
        signature(self.object, user_id, key_name)
    }
}

fn signature<'a>(
    object: Map<'a>,
    user_id: &str,
    key_name: &str,
) -> Result<Option<Binary<'a>>, ViewError> {
    let Some(by_user) = object.path_map(&["signatures", user_id])? else {
        return Ok(None);
    };
    by_user.bounded(MAX_DEVICES_PER_USER)?;
    by_user.located(key_name)?.map(Located::binary).transpose()
}

/// The response to `keys/claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysClaimResponse<'a>(pub Map<'a>);

impl<'a> KeysClaimResponse<'a> {
    /// Views a keys/claim response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// The one-time key claimed for `user_id`'s device `device_id`, if the server had one.
    pub fn one_time_key(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Option<SignedKey<'a>>, ViewError> {
        let Some(keys) = self.0.path_map(&["one_time_keys", user_id, device_id])? else {
            return Ok(None);
        };
        let mut entries = keys.bounded(MAX_SMALL_MAP)?;
        let Some(entry) = entries.entry() else {
            return Ok(None);
        };
        let entry = entry?;
        let object = entry.value.map()?;
        Ok(Some(SignedKey {
            key_id: entry.name,
            key: object.required("key")?.binary()?,
            object,
        }))
    }
}

/// One device's keys from a `keys/query` response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKeys<'a>(pub Map<'a>);

impl<'a> DeviceKeys<'a> {
    /// `user_id`.
    pub fn user_id(&self) -> Result<&'a str, ViewError> {
        self.0.required("user_id")?.text()
    }

    /// `device_id`.
    pub fn device_id(&self) -> Result<&'a str, ViewError> {
        self.0.required("device_id")?.text()
    }

    /// `keys.<key_name>`, e.g. `curve25519:DEVICEID`.
    pub fn key(&self, key_name: &str) -> Result<Option<Binary<'a>>, ViewError> {
        let Some(keys) = self.0.optional_map("keys")? else {
            return Ok(None);
        };
        keys.bounded(MAX_SMALL_MAP)?;
        keys.located(key_name)?.map(Located::binary).transpose()
    }

    /// The signature by `user_id`'s key `key_name` (e.g. `ed25519:DEVICEID`).
    pub fn signature(
        &self,
        user_id: &str,
        key_name: &str,
    ) -> Result<Option<Binary<'a>>, ViewError> {
        signature(self.0, user_id, key_name)
    }
}

/// Iterator over the devices of one user in a `keys/query` response.
#[derive(Debug, Clone)]
pub struct Devices<'a>(Option<Entries<'a>>);

impl<'a> Iterator for Devices<'a> {
    type Item = Result<(&'a str, DeviceKeys<'a>), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.0.as_mut()?.entry()?;
        Some(entry.and_then(|entry| Ok((entry.name, DeviceKeys(entry.value.map()?)))))
    }
}

/// The response to `keys/query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysQueryResponse<'a>(pub Map<'a>);

impl<'a> KeysQueryResponse<'a> {
    /// Views a keys/query response body.
    pub fn parse(input: &'a [u8], version: TableVersion) -> Result<Self, ViewError> {
        root_map(input, version).map(Self)
    }

    /// The devices of `user_id`, at most [`MAX_DEVICES_PER_USER`].
    pub fn devices(&self, user_id: &str) -> Result<Devices<'a>, ViewError> {
        let devices = self.0.path_map(&["device_keys", user_id])?;
        Ok(Devices(
            devices
                .map(|d| d.bounded(MAX_DEVICES_PER_USER))
                .transpose()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{base64_at, bytes_of, fixture};
    use super::*;
    use crate::transcode::json_to_cbor;
    use crate::view::{Id, SendEventResponse};
    use serde_json::json;

    #[test]
    fn keys_views_read_claim_query_and_upload_responses() {
        let version = TableVersion::V2;
        let claim_json = fixture("keys_claim_response.json");
        let claim_cbor = json_to_cbor(&claim_json, version).unwrap();
        let claim = KeysClaimResponse::parse(&claim_cbor, version).unwrap();
        let key = claim
            .one_time_key("@bob:localhost", "BOBDEVICE1")
            .unwrap()
            .unwrap();
        assert_eq!(key.key_id, "signed_curve25519:AAAAHg");
        let base = "/one_time_keys/@bob:localhost/BOBDEVICE1/signed_curve25519:AAAAHg";
        assert_eq!(
            bytes_of(key.key),
            base64_at(&claim_json, &format!("{base}/key"))
        );
        let signature = key
            .signature("@bob:localhost", "ed25519:BOBDEVICE1")
            .unwrap()
            .unwrap();
        assert_eq!(
            bytes_of(signature),
            base64_at(
                &claim_json,
                &format!("{base}/signatures/@bob:localhost/ed25519:BOBDEVICE1")
            )
        );
        assert_eq!(claim.one_time_key("@bob:localhost", "OTHER").unwrap(), None);

        let query_json = fixture("keys_query_response.json");
        let query_cbor = json_to_cbor(&query_json, version).unwrap();
        let query = KeysQueryResponse::parse(&query_cbor, version).unwrap();
        let devices: Vec<_> = query
            .devices("@bob:localhost")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(devices.len(), 1);
        let (device_id, keys) = devices[0];
        assert_eq!(device_id, "BOBDEVICE1");
        assert_eq!(keys.user_id().unwrap(), "@bob:localhost");
        assert_eq!(keys.device_id().unwrap(), "BOBDEVICE1");
        let base = "/device_keys/@bob:localhost/BOBDEVICE1";
        assert_eq!(
            bytes_of(keys.key("curve25519:BOBDEVICE1").unwrap().unwrap()),
            base64_at(&query_json, &format!("{base}/keys/curve25519:BOBDEVICE1"))
        );
        assert!(
            keys.signature("@bob:localhost", "ed25519:BOBDEVICE1")
                .unwrap()
                .is_some()
        );
        assert_eq!(query.devices("@nobody:localhost").unwrap().count(), 0);

        let upload_cbor = json_to_cbor(&fixture("keys_upload_response.json"), version).unwrap();
        let upload = KeysUploadResponse::parse(&upload_cbor, version).unwrap();
        assert_eq!(upload.one_time_key_count("signed_curve25519").unwrap(), 50);

        let sent = json_to_cbor(&json!({"event_id": "$abc"}), version).unwrap();
        assert_eq!(
            SendEventResponse::parse(&sent, version)
                .unwrap()
                .event_id()
                .unwrap(),
            Id::Text("$abc")
        );
    }
}
