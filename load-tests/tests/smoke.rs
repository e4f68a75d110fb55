//! A few seconds of each scenario against a real sealrelay on ephemeral ports: the load
//! tool works end to end and QoS 1 loses nothing. Figures are not asserted here; they are
//! measured with release builds and written to docs/benchmarks.md.

use std::time::Duration;

use clap::Parser;
use sealrelay_broker::config::Config;
use sealrelay_broker::server::Addresses;
use sealrelay_load::{run, Kind, Scenario};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    scenario: Scenario,
}

/// Starts the broker in its own actix system thread; the returned sender stops it.
fn start_broker(dir: &std::path::Path) -> (Addresses, tokio::sync::oneshot::Sender<()>) {
    let text = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n\
         connects_per_ip_per_minute = 1000000\nconnects_per_principal_per_minute = 1000000\n\
         publishes_per_second = 0\nbytes_per_second = 0\n[http]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [mqtts]\nlisten = \"127.0.0.1:0\"\n[ws]\nlisten = \"\"\n[wss]\nlisten = \"127.0.0.1:0\"\n[https]\nlisten = \"\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{0}/admin.token\"\n\
         [directory]\ndatabase = \"{0}/sealrelay.db\"\nprelogin_key_file = \"{0}/prelogin.key\"\n\
         [kdf]\nmemory_kib = 19456\niterations = 2\n\
         [auth]\nregistrations_per_ip_per_hour = 1000000\nprelogins_per_ip_per_minute = 1000000\n",
        dir.display()
    );
    let config = Config::from_layers(Some(("smoke.toml", &text)), std::iter::empty()).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let running = sealrelay_broker::server::start(config)
                .await
                .expect("broker starts");
            ready_tx.send(running.addresses).unwrap();
            let _ = stop_rx.await;
            running.shutdown().await;
        })
    });
    let addresses = ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("broker ready");
    (addresses, stop_tx)
}

#[test]
fn every_scenario_runs_and_qos_1_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (addresses, stop) = start_broker(dir.path());
    let pid = std::process::id().to_string();
    let ca = dir.path().join("tls-dev-ca.pem");
    let over = |mqtt: String, args: &[&str]| {
        let base = [
            "sealrelay-load",
            "--mqtt",
            &mqtt,
            "--http",
            &format!("http://{}", addresses.http),
            "--ca-file",
            ca.to_str().unwrap(),
            "--broker-pid",
            &pid,
        ];
        Flags::parse_from(base.iter().copied().chain(args.iter().copied())).scenario
    };
    let scenario = |args: &[&str]| over(addresses.mqtt.to_string(), args);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Pairs, closed loop at QoS 1.
    let report = runtime
        .block_on(run(&scenario(&[
            "--consoles",
            "4",
            "--duration",
            "2",
            "--qos",
            "1",
        ])))
        .unwrap();
    assert_eq!((report.lost, report.errors), (0, 0), "{}", report.table());
    assert!(
        report.received > 1000 && report.latency_us.is_some(),
        "{}",
        report.table()
    );
    assert!(report.broker_usage.is_some_and(|u| u.cpu_seconds > 0.0));

    // Fan-out, open loop at QoS 1.
    let report = runtime
        .block_on(run(&scenario(&[
            "--instances-per-console",
            "50",
            "--rate",
            "2000",
            "--duration",
            "1",
            "--qos",
            "1",
        ])))
        .unwrap();
    assert_eq!((report.lost, report.errors), (0, 0), "{}", report.table());
    assert!(report.received >= 1500, "{}", report.table());

    // Instances dropping their connections under traffic come back to what was sent
    // meanwhile: persistent sessions lose nothing.
    let report = runtime
        .block_on(run(&scenario(&[
            "--consoles",
            "4",
            "--rate",
            "400",
            "--duration",
            "3",
            "--churn",
            "1",
            "--away",
            "300",
        ])))
        .unwrap();
    assert_eq!((report.lost, report.errors), (0, 0), "{}", report.table());
    assert!(
        report.blinks >= 8 && report.received == report.sent,
        "{}",
        report.table()
    );

    // A reconnect storm of authenticated sessions.
    let report = runtime
        .block_on(run(&scenario(&[
            "--kind",
            "storm",
            "--sessions",
            "200",
            "--rounds",
            "2",
        ])))
        .unwrap();
    assert_eq!(
        (report.kind, report.sessions, report.errors),
        (Kind::Storm, 400, 0),
        "{}",
        report.table()
    );

    // The same traffic over MQTT over TLS and over WebSocket over TLS.
    for url in [
        format!("mqtts://{}", addresses.mqtts.unwrap()),
        format!("wss://{}/mqtt", addresses.wss.unwrap()),
    ] {
        let report = runtime
            .block_on(run(&over(
                url.clone(),
                &["--consoles", "4", "--duration", "1", "--qos", "1"],
            )))
            .unwrap();
        assert_eq!(
            (report.lost, report.errors),
            (0, 0),
            "{url}: {}",
            report.table()
        );
        assert!(report.received > 100, "{url}: {}", report.table());
    }

    let _ = stop.send(());
}
