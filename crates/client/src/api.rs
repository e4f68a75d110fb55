//! The HTTP API from the client side: one method per endpoint of `docs/http-api.md`.
//! ureq is blocking, so each call runs on tokio's blocking pool.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::ClientError;
use sealrelay_wire::api::{
    Activity, AddInstanceRequest, ChangePasswordRequest, Enrolment, ErrorBody, InstanceList,
    InstanceView, KeyProofBody, KeyringBody, Me, PreloginRequest, PreviousRequest, PreviousWrap,
    PublicKeyView, RegisterRequest, ResetDone, ResetRequest, RollbackRequest, RotateTokenRequest,
};
use sealrelay_wire::{b64, KdfSpec, PrincipalId};

/// A login for the Basic header: the login name and the derived auth secret.
pub struct Login<'a> {
    /// The user's name or the instance's id (hex).
    pub login: &'a str,
    /// The derived login secret (protocol §2.3), never the password or the token.
    pub secret: &'a str,
}

impl Login<'_> {
    fn header(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "Basic {}",
            b64::encode(format!("{}:{}", self.login, self.secret).as_bytes())
        ))
    }
}

/// The API's error for a response that is not a 2xx; `Ok` for one that is.
fn refused(response: &mut ureq::http::Response<ureq::Body>) -> Result<(), ClientError> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body: Option<ErrorBody> = response.body_mut().read_json().ok();
    Err(ClientError::Api {
        status,
        code: body
            .as_ref()
            .map_or_else(|| "unknown".into(), |b| b.error.clone()),
        message: body.map_or_else(
            || format!("HTTP {status} without a JSON error body"),
            |b| b.message,
        ),
    })
}

/// The broker's HTTP API (docs/http-api.md): JSON over HTTP or HTTPS, one blocking request
/// at a time on a worker thread, 30 s at most each.
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// The API at `base_url`; an `https://` one trusts the system's roots.
    pub fn new(base_url: &str) -> Api {
        Api::build(base_url, ureq::tls::RootCerts::WebPki)
    }

    /// The API at `base_url` (`http://` or `https://`), trusting the CAs in `ca_file` for
    /// TLS when given (a private CA, or the broker's development certificate).
    pub fn with_ca(base_url: &str, ca_file: Option<&std::path::Path>) -> Result<Api, ClientError> {
        let scheme = base_url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(ClientError::Usage(format!(
                "server URL `{base_url}` must start with http:// or https://"
            )));
        }
        let roots = match ca_file {
            Some(path) => {
                let certs = crate::endpoint::read_ca_file(path)?
                    .into_iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned());
                ureq::tls::RootCerts::from(certs)
            }
            None => ureq::tls::RootCerts::WebPki,
        };
        Ok(Api::build(base_url, roots))
    }

    fn build(base_url: &str, roots: ureq::tls::RootCerts) -> Api {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            .build();
        Api {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: config.into(),
        }
    }

    async fn call<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        path: String,
        auth: Option<Zeroizing<String>>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let agent = self.agent.clone();
        let url = format!("{}{}", self.base, path);
        tokio::task::spawn_blocking(move || {
            let transport = |e: ureq::Error| ClientError::Transport(format!("{method} {url}: {e}"));
            let mut response = match (method, body) {
                ("GET", _) | ("DELETE", None) => {
                    let mut req = if method == "GET" {
                        agent.get(&url)
                    } else {
                        agent.delete(&url)
                    };
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth.as_str());
                    }
                    req.call().map_err(transport)?
                }
                (_, body) => {
                    let mut req = match method {
                        "PUT" => agent.put(&url),
                        "DELETE" => agent.delete(&url).force_send_body(),
                        _ => agent.post(&url),
                    };
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth.as_str());
                    }
                    req.send_json(body.unwrap_or(serde_json::Value::Null))
                        .map_err(transport)?
                }
            };
            refused(&mut response)?;
            response.body_mut().read_json::<T>().map_err(|e| {
                ClientError::Transport(format!("{method} {url}: unreadable response: {e}"))
            })
        })
        .await
        .map_err(|e| ClientError::Transport(format!("HTTP task failed: {e}")))?
    }

    /// `POST /v1/prelogin`: the salt and KDF parameters to derive `name`'s login secret with
    /// (fakes, stable per name, for names nobody has).
    pub async fn prelogin(&self, name: &str) -> Result<KdfSpec, ClientError> {
        let request = PreloginRequest { name: name.into() };
        self.send("POST", "/v1/prelogin", None, &request).await
    }

    /// Salt and KDF parameters of the password `name`'s last change replaced (a fake for
    /// names with nothing to roll back, as prelogin does for unknown names).
    pub async fn prelogin_previous(&self, name: &str) -> Result<KdfSpec, ClientError> {
        let request = PreloginRequest { name: name.into() };
        self.send("POST", "/v1/prelogin/previous", None, &request)
            .await
    }

    /// The wrap a change of password replaced, for the previous password's login secret.
    pub async fn previous_wrap(
        &self,
        request: &PreviousRequest,
    ) -> Result<PreviousWrap, ClientError> {
        self.send("POST", "/v1/users/previous", None, request).await
    }

    /// Undoes the last change of password (no current login: the previous password's login
    /// secret and the key proof authorise it).
    pub async fn roll_back(&self, request: &RollbackRequest) -> Result<(), ClientError> {
        self.send_only("POST", "/v1/users/rollback", None, request)
            .await
    }

    /// Records the key proof of an account registered before key proofs (once).
    pub async fn put_key_proof(
        &self,
        login: Login<'_>,
        body: &KeyProofBody,
    ) -> Result<(), ClientError> {
        self.send_only("PUT", "/v1/me/key-proof", Some(login.header()), body)
            .await
    }

    /// Sends `request` where only success matters (the answer body is not needed).
    async fn send_only(
        &self,
        method: &'static str,
        path: &str,
        auth: Option<Zeroizing<String>>,
        request: &impl Serialize,
    ) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(method, path, auth, request)
            .await
            .map(drop)
    }

    async fn send<T: DeserializeOwned + Send + 'static>(
        &self,
        method: &'static str,
        path: &str,
        auth: Option<Zeroizing<String>>,
        request: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(request).expect("request serialises");
        self.call(method, path.into(), auth, Some(body)).await
    }

    /// `POST /v1/users`: creates the account described by `request` (wrapped key, verifier, public
    /// key; see [`Identity::register_user`](crate::Identity::register_user)).
    pub async fn register(&self, request: RegisterRequest) -> Result<(), ClientError> {
        self.send_only("POST", "/v1/users", None, &request).await
    }

    /// `GET /v1/me`: the caller's own record (wrapped key, KDF, keyring and its version).
    pub async fn me(&self, login: Login<'_>) -> Result<Me, ClientError> {
        self.call("GET", "/v1/me".into(), Some(login.header()), None)
            .await
    }

    /// `GET /v1/me/activity`: everything the server holds about the caller (and, for a
    /// user, its instances), from `since` (unix seconds) or over the retention period.
    pub async fn activity(
        &self,
        login: Login<'_>,
        since: Option<i64>,
    ) -> Result<Activity, ClientError> {
        let query = since.map_or_else(String::new, |s| format!("?since={s}"));
        self.call(
            "GET",
            format!("/v1/me/activity{query}"),
            Some(login.header()),
            None,
        )
        .await
    }

    /// `POST /v1/me/password`: replaces the caller's wrap and verifier (the same key, re-wrapped).
    pub async fn change_password(
        &self,
        login: Login<'_>,
        request: ChangePasswordRequest,
    ) -> Result<(), ClientError> {
        self.send_only("POST", "/v1/me/password", Some(login.header()), &request)
            .await
    }

    /// `POST /v1/instances`: records a new instance of the caller (its public key, wrapped key,
    /// token verifier and owner copy).
    pub async fn add_instance(
        &self,
        login: Login<'_>,
        request: &AddInstanceRequest,
    ) -> Result<(), ClientError> {
        self.send_only("POST", "/v1/instances", Some(login.header()), request)
            .await
    }

    /// `POST /v1/instances/{id}/token`: a new token for instance `id` (the same key, re-wrapped);
    /// the old token stops logging in.
    pub async fn rotate_token(
        &self,
        login: Login<'_>,
        id: PrincipalId,
        request: RotateTokenRequest,
    ) -> Result<(), ClientError> {
        self.send_only(
            "POST",
            &format!("/v1/instances/{id}/token"),
            Some(login.header()),
            &request,
        )
        .await
    }

    /// DELETEs `path` where only success matters.
    async fn delete(&self, path: String, login: Login<'_>) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", path, Some(login.header()), None)
            .await
            .map(drop)
    }

    /// Deletes the caller's account; the key proof shows the caller holds its key.
    pub async fn delete_account(
        &self,
        login: Login<'_>,
        body: &KeyProofBody,
    ) -> Result<(), ClientError> {
        self.send_only("DELETE", "/v1/me", Some(login.header()), body)
            .await
    }

    /// `DELETE /v1/instances/{id}`: removes instance `id`; its sessions end and its token dies.
    pub async fn remove_instance(
        &self,
        login: Login<'_>,
        id: PrincipalId,
    ) -> Result<(), ClientError> {
        self.delete(format!("/v1/instances/{id}"), login).await
    }

    /// `GET /v1/instances`: the caller's instances, with when each was last online.
    pub async fn instances(&self, login: Login<'_>) -> Result<Vec<InstanceView>, ClientError> {
        let list: InstanceList = self
            .call("GET", "/v1/instances".into(), Some(login.header()), None)
            .await?;
        Ok(list.instances)
    }

    /// Replaces the caller's sealed keyring (version = stored + 1, else 409).
    pub async fn put_keyring(
        &self,
        login: Login<'_>,
        body: KeyringBody,
    ) -> Result<(), ClientError> {
        self.send_only("PUT", "/v1/me/keyring", Some(login.header()), &body)
            .await
    }

    /// `POST /v1/instances/{id}/reenrol`: replaces instance `id`'s key pair and token (after the
    /// owner's password reset).
    pub async fn reenrol_instance(
        &self,
        login: Login<'_>,
        id: PrincipalId,
        request: &Enrolment,
    ) -> Result<(), ClientError> {
        self.send_only(
            "POST",
            &format!("/v1/instances/{id}/reenrol"),
            Some(login.header()),
            request,
        )
        .await
    }

    /// Completes an operator-issued reset (no login: the reset code authorises it).
    pub async fn complete_reset(&self, request: ResetRequest) -> Result<ResetDone, ClientError> {
        self.send("POST", "/v1/users/reset", None, &request).await
    }

    /// Operator API: issues a reset code for user `name`. `token` is the operator token.
    /// One call of the operator API (`[admin]` listener) with the operator's bearer `token`:
    /// `GET` for listings, `POST` (empty body) for actions; the answer's JSON as `T`.
    pub async fn admin<T: DeserializeOwned + Send + 'static>(
        &self,
        token: &str,
        method: &'static str,
        path: &str,
    ) -> Result<T, ClientError> {
        let auth = Zeroizing::new(format!("Bearer {token}"));
        let body = (method == "POST").then(|| serde_json::json!({}));
        self.call(method, path.into(), Some(auth), body).await
    }

    /// `GET /healthz` or `GET /readyz` (`path`): the broker's JSON answer, or its refusal.
    pub async fn probe(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call("GET", path.into(), None, None).await
    }

    /// Operator API: an online copy of the broker's SQLite directory (`GET
    /// /v1/admin/backup`), written into `to` and flushed; its length in bytes.
    pub async fn admin_backup(
        &self,
        token: &str,
        mut to: impl std::io::Write + Send + 'static,
    ) -> Result<u64, ClientError> {
        let auth = Zeroizing::new(format!("Bearer {token}"));
        let agent = self.agent.clone();
        let url = format!("{}/v1/admin/backup", self.base);
        tokio::task::spawn_blocking(move || {
            let transport = |e: String| ClientError::Transport(format!("GET {url}: {e}"));
            let mut response = agent
                .get(&url)
                .header("Authorization", auth.as_str())
                .config()
                .timeout_global(None)
                .build()
                .call()
                .map_err(|e| transport(e.to_string()))?;
            refused(&mut response)?;
            let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
            let copied = std::io::copy(&mut body, &mut to).map_err(|e| transport(e.to_string()))?;
            to.flush().map_err(|e| transport(e.to_string()))?;
            Ok(copied)
        })
        .await
        .map_err(|e| ClientError::Transport(format!("HTTP task failed: {e}")))?
    }

    /// `GET /v1/principals/{id}/key`: the directory's public key for a principal paired with the
    /// caller — checked against the keyring's pin before any use.
    pub async fn public_key(
        &self,
        login: Login<'_>,
        id: PrincipalId,
    ) -> Result<PublicKeyView, ClientError> {
        self.call(
            "GET",
            format!("/v1/principals/{id}/key"),
            Some(login.header()),
            None,
        )
        .await
    }
}
