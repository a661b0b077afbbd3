//! Typed client methods for asymmetric keys (KEY:SIGN, KEY:VERIFY,
//! KEY:PUBLICKEY, KEY:ASYMDECRYPT, KEY:DESCRIBE, KEY:LISTALL). Keys are
//! created with [`Client::create_key`] and [`Client::import_key`] and an
//! asymmetric type (`EC-P256`, `ML-DSA-65`, ...).

use crate::{proto, Client, Command, Error};

impl Client {
    /// KEY:SIGN: signs `message` (or, with `params.prehashed`, its digest)
    /// with `version` of `name` (0: the latest).
    pub async fn sign(
        &self,
        enclave: &str,
        name: &str,
        version: u32,
        message: &[u8],
        params: proto::SignParams,
    ) -> Result<proto::SignResponse, Error> {
        let req = proto::SignRequest {
            name: name.into(),
            version,
            message: message.to_vec(),
            params: Some(params),
        };
        self.call(Some(enclave), Command::KeySign, &req).await
    }

    /// KEY:VERIFY: whether `signature` is valid for `message` under
    /// `version` of `name` (0: any version, newest first).
    pub async fn verify(
        &self,
        enclave: &str,
        name: &str,
        version: u32,
        message: &[u8],
        signature: &[u8],
        params: proto::SignParams,
    ) -> Result<proto::VerifyResponse, Error> {
        let req = proto::VerifyRequest {
            name: name.into(),
            version,
            message: message.to_vec(),
            params: Some(params),
            signature: signature.to_vec(),
        };
        self.call(Some(enclave), Command::KeyVerify, &req).await
    }

    /// KEY:PUBLICKEY: the SubjectPublicKeyInfo (DER) of `version` of `name`
    /// (0: the latest).
    pub async fn public_key(
        &self,
        enclave: &str,
        name: &str,
        version: u32,
    ) -> Result<proto::PublicKeyResponse, Error> {
        let req = proto::PublicKeyRequest {
            name: name.into(),
            version,
        };
        self.call(Some(enclave), Command::KeyPublicKey, &req).await
    }

    /// KEY:ASYMDECRYPT: RSA-OAEP decryption with `hash` (empty: SHA-256),
    /// MGF1 with the same hash, and `label`.
    pub async fn asym_decrypt(
        &self,
        enclave: &str,
        name: &str,
        ciphertext: &[u8],
        hash: &str,
        label: &[u8],
    ) -> Result<proto::AsymDecryptResponse, Error> {
        let req = proto::AsymDecryptRequest {
            name: name.into(),
            version: 0,
            ciphertext: ciphertext.to_vec(),
            hash: hash.into(),
            mgf1_hash: String::new(),
            label: label.to_vec(),
        };
        self.call(Some(enclave), Command::KeyAsymDecrypt, &req)
            .await
    }

    /// KEY:DESCRIBE: any key, secret or asymmetric, with every version.
    pub async fn describe_key(
        &self,
        enclave: &str,
        name: &str,
    ) -> Result<proto::DescribeKeyResponse, Error> {
        let req = proto::DescribeKeyRequest { name: name.into() };
        self.call(Some(enclave), Command::KeyDescribe, &req).await
    }

    /// One page of KEY:LISTALL: every kind of key whose name starts with
    /// `prefix`, from `continue_at`; `limit` 0 is the server's maximum.
    pub async fn list_all_keys_page(
        &self,
        enclave: &str,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListKeysResponse, Error> {
        let req = crate::admin::list_request(prefix, continue_at, limit);
        self.call(Some(enclave), Command::KeyListAll, &req).await
    }

    /// Every page of KEY:LISTALL with `prefix`.
    pub async fn list_all_keys(
        &self,
        enclave: &str,
        prefix: &str,
    ) -> Result<Vec<proto::KeyStatusResponse>, Error> {
        crate::admin::all_pages(
            |at| async move { self.list_all_keys_page(enclave, prefix, &at, 0).await },
            |p| (p.keys, p.continue_at),
        )
        .await
    }
}

impl Client {
    /// OBJECT:CREATE: a token object named `name` (unique in the enclave).
    pub async fn create_object(
        &self,
        enclave: &str,
        name: &str,
        class: u64,
        attributes: Vec<proto::ObjectAttribute>,
    ) -> Result<(), Error> {
        let req = proto::ObjectRequest {
            name: name.into(),
            class,
            attributes,
        };
        self.exec(Some(enclave), Command::ObjectCreate, &req).await
    }

    /// OBJECT:SET: replaces every attribute of an existing object.
    pub async fn set_object(
        &self,
        enclave: &str,
        name: &str,
        class: u64,
        attributes: Vec<proto::ObjectAttribute>,
    ) -> Result<(), Error> {
        let req = proto::ObjectRequest {
            name: name.into(),
            class,
            attributes,
        };
        self.exec(Some(enclave), Command::ObjectSet, &req).await
    }

    /// OBJECT:DELETE.
    pub async fn delete_object(&self, enclave: &str, name: &str) -> Result<(), Error> {
        let req = proto::DeleteObjectRequest { name: name.into() };
        self.exec(Some(enclave), Command::ObjectDelete, &req).await
    }

    /// One page of OBJECT:LIST, objects with their attributes.
    pub async fn list_objects_page(
        &self,
        enclave: &str,
        prefix: &str,
        continue_at: &str,
        limit: u32,
    ) -> Result<proto::ListObjectsResponse, Error> {
        let req = crate::admin::list_request(prefix, continue_at, limit);
        self.call(Some(enclave), Command::ObjectList, &req).await
    }

    /// Every page of OBJECT:LIST with `prefix`.
    pub async fn list_objects(
        &self,
        enclave: &str,
        prefix: &str,
    ) -> Result<Vec<proto::ObjectResponse>, Error> {
        crate::admin::all_pages(
            |at| async move { self.list_objects_page(enclave, prefix, &at, 0).await },
            |p| (p.objects, p.continue_at),
        )
        .await
    }
}
