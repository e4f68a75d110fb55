//! An instance: log in with its token and answer every sealed request from its owner.
//! `SEALRELAY_TOKEN=srt1.… cargo run -p sealrelay-client --example agent`

use sealrelay_client::crypto::Token;
use sealrelay_client::{Api, Client, ClientError, Identity, MqttVersion};
use std::env;

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let server = env::var("SEALRELAY_SERVER").unwrap_or("http://127.0.0.1:8080".into());
    let broker = env::var("SEALRELAY_BROKER").unwrap_or("127.0.0.1:1883".into());
    let token: Token = env::var("SEALRELAY_TOKEN")
        .expect("set SEALRELAY_TOKEN")
        .parse()?;
    let api = Api::new(&server);
    let me = Identity::login_instance(&api, &token).await?;
    let mut agent = Client::connect(api, me, &broker, MqttVersion::V5).await?;
    agent
        .serve(|asked| [b"up; you asked: ".as_slice(), &asked.payload].concat())
        .await
}
