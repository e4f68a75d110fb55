//! A console: log in as a user, ask one of your instances something, print its answer.
//! `SEALRELAY_PASSWORD=… cargo run -p sealrelay-client --example console -- alice <instance id>`

use sealrelay_client::{Api, Client, ClientError, Identity, MqttVersion, PrincipalId};
use std::{env, time::Duration};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let server = env::var("SEALRELAY_SERVER").unwrap_or("http://127.0.0.1:8080".into());
    let broker = env::var("SEALRELAY_BROKER").unwrap_or("127.0.0.1:1883".into());
    let usage = "usage: console <user> <instance id>, with SEALRELAY_PASSWORD set";
    let (user, instance) = (
        env::args().nth(1).expect(usage),
        env::args().nth(2).expect(usage),
    );
    let instance: PrincipalId = instance.parse().expect("an instance id: 32 hex digits");
    let api = Api::new(&server);
    let me =
        Identity::login_user(&api, &user, &env::var("SEALRELAY_PASSWORD").expect(usage)).await?;
    let mut console = Client::connect(api, me, &broker, MqttVersion::V5).await?;
    let answer = console
        .request(instance, b"status?", Duration::from_secs(10))
        .await?;
    println!("{}", String::from_utf8_lossy(&answer));
    Ok(())
}
