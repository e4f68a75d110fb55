//! The HTTP API from the client side: one method per endpoint of `docs/http-api.md`.
//! ureq is blocking, so each call runs on tokio's blocking pool.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ClientError;
use crate::protocol::{b64, KdfSpec, PrincipalId, PrincipalKind};

#[derive(Serialize)]
pub struct RegisterRequest<'a> {
    pub name: &'a str,
    pub user_id: PrincipalId,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    pub auth_secret: &'a str,
    pub kdf: KdfSpec,
}

#[derive(Serialize)]
pub struct ChangePasswordRequest<'a> {
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    pub auth_secret: &'a str,
    pub kdf: KdfSpec,
}

#[derive(Serialize)]
pub struct AddInstanceRequest<'a> {
    pub instance_id: PrincipalId,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    pub auth_secret: &'a str,
    #[serde(with = "b64")]
    pub owner_copy: Vec<u8>,
}

#[derive(Serialize)]
pub struct RotateTokenRequest<'a> {
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    pub auth_secret: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct Me {
    pub id: PrincipalId,
    pub kind: PrincipalKind,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    pub witness: String,
    pub peers: Vec<PrincipalId>,
    /// For users: the KDF parameters the server recommends now (upgrade on password change).
    #[serde(default)]
    pub kdf_recommended: Option<crate::protocol::KdfParams>,
}

#[derive(Debug, Deserialize)]
pub struct InstanceView {
    pub id: PrincipalId,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub witness: String,
    pub created_at: i64,
    pub online: bool,
    /// The owner's escrow copy of the instance bundle (base64), if it has one.
    pub owner_copy: Option<String>,
}

#[derive(Deserialize)]
struct InstanceList {
    instances: Vec<InstanceView>,
}

#[derive(Debug, Deserialize)]
pub struct PublicKeyView {
    pub id: PrincipalId,
    pub kind: PrincipalKind,
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    pub witness: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// A login for the Basic header: the login name and the derived auth secret.
pub struct Login<'a> {
    pub login: &'a str,
    pub secret: &'a str,
}

#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base_url: &str) -> Api {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
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
        login: Option<Login<'_>>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let agent = self.agent.clone();
        let url = format!("{}{}", self.base, path);
        let auth = login.map(|l| {
            Zeroizing::new(format!(
                "Basic {}",
                b64::encode(format!("{}:{}", l.login, l.secret).as_bytes())
            ))
        });
        tokio::task::spawn_blocking(move || {
            let transport = |e: ureq::Error| ClientError::Transport(format!("{method} {url}: {e}"));
            let mut response = match (method, body) {
                ("GET" | "DELETE", _) => {
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
                    let mut req = agent.post(&url);
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth.as_str());
                    }
                    req.send_json(body.unwrap_or(serde_json::Value::Null))
                        .map_err(transport)?
                }
            };
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                let body: Option<ErrorBody> = response.body_mut().read_json().ok();
                return Err(ClientError::Api {
                    status,
                    code: body
                        .as_ref()
                        .map_or_else(|| "unknown".into(), |b| b.error.clone()),
                    message: body.map_or_else(
                        || format!("HTTP {status} without a JSON error body"),
                        |b| b.message,
                    ),
                });
            }
            response.body_mut().read_json::<T>().map_err(|e| {
                ClientError::Transport(format!("{method} {url}: unreadable response: {e}"))
            })
        })
        .await
        .map_err(|e| ClientError::Transport(format!("HTTP task failed: {e}")))?
    }

    pub async fn prelogin(&self, name: &str) -> Result<KdfSpec, ClientError> {
        self.call(
            "POST",
            "/v1/prelogin".into(),
            None,
            Some(serde_json::json!({ "name": name })),
        )
        .await
    }

    /// POSTs `request` where only success matters (the answer body is not needed).
    async fn post(
        &self,
        path: &str,
        login: Option<Login<'_>>,
        request: &impl Serialize,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_value(request).expect("request serialises");
        self.call::<serde_json::Value>("POST", path.into(), login, Some(body))
            .await
            .map(drop)
    }

    pub async fn register(&self, request: RegisterRequest<'_>) -> Result<(), ClientError> {
        self.post("/v1/users", None, &request).await
    }

    pub async fn me(&self, login: Login<'_>) -> Result<Me, ClientError> {
        self.call("GET", "/v1/me".into(), Some(login), None).await
    }

    pub async fn change_password(
        &self,
        login: Login<'_>,
        request: ChangePasswordRequest<'_>,
    ) -> Result<(), ClientError> {
        self.post("/v1/me/password", Some(login), &request).await
    }

    pub async fn add_instance(
        &self,
        login: Login<'_>,
        request: AddInstanceRequest<'_>,
    ) -> Result<(), ClientError> {
        self.post("/v1/instances", Some(login), &request).await
    }

    pub async fn rotate_token(
        &self,
        login: Login<'_>,
        id: PrincipalId,
        request: RotateTokenRequest<'_>,
    ) -> Result<(), ClientError> {
        self.post(&format!("/v1/instances/{id}/token"), Some(login), &request)
            .await
    }

    pub async fn delete_account(&self, login: Login<'_>) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", "/v1/me".into(), Some(login), None)
            .await
            .map(drop)
    }

    pub async fn remove_instance(
        &self,
        login: Login<'_>,
        id: PrincipalId,
    ) -> Result<(), ClientError> {
        self.call::<serde_json::Value>("DELETE", format!("/v1/instances/{id}"), Some(login), None)
            .await
            .map(drop)
    }

    pub async fn instances(&self, login: Login<'_>) -> Result<Vec<InstanceView>, ClientError> {
        let list: InstanceList = self
            .call("GET", "/v1/instances".into(), Some(login), None)
            .await?;
        Ok(list.instances)
    }

    pub async fn public_key(
        &self,
        login: Login<'_>,
        id: PrincipalId,
    ) -> Result<PublicKeyView, ClientError> {
        self.call("GET", format!("/v1/principals/{id}/key"), Some(login), None)
            .await
    }
}
