//! The CLI as a newcomer meets it: each mistake answered in the user's words with what to do
//! (the texts asserted here are exactly what the user sees), an agent started before its
//! broker waits for it, a normal end is recorded as one, times read as dates, and each verb's
//! help lists only what it uses.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Output, Stdio};
use std::time::{Duration, Instant};

use common::{run_cli_ok, Broker};
use sqlx::Row;

const PASSWORD: &str = "correct horse battery";

/// `sealrelay <args>` as alice; returns the output whatever its status.
fn as_alice(broker: &Broker, args: &[&str]) -> Output {
    broker
        .cli()
        .args(args)
        .args(["--user", "alice"])
        .env("SEALRELAY_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

/// The one line a failed command printed.
fn refusal(out: &Output) -> String {
    assert!(!out.status.success(), "it should have failed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_owned()
}

/// alice registered, with one instance: its id and token.
fn alice_with_an_instance(broker: &Broker) -> (String, String) {
    run_cli_ok(
        broker.cli(),
        &["user", "register", "--user", "alice"],
        PASSWORD,
    );
    common::instance_and_token(&run_cli_ok(
        broker.cli(),
        &["instance", "add", "--user", "alice"],
        PASSWORD,
    ))
}

#[test]
fn mistakes_are_answered_in_the_users_words() {
    let broker = Broker::start();
    // A weak new password is refused before anything is sent, with the way out.
    let weak = broker
        .cli()
        .args(["user", "register", "--user", "bob"])
        .env("SEALRELAY_PASSWORD", "bob12345")
        .output()
        .unwrap();
    assert_eq!(
        refusal(&weak),
        "sealrelay: the new password has 8 characters; use at least 10 (a few unrelated words make a strong one); --allow-weak-password takes it anyway"
    );
    let forced = broker
        .cli()
        .args(["user", "register", "--user", "bob", "--allow-weak-password"])
        .env("SEALRELAY_PASSWORD", "bob12345")
        .output()
        .unwrap();
    assert!(forced.status.success());

    let (instance, token) = alice_with_an_instance(&broker);
    // A typo is not a key-substitution attack.
    let typo = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        refusal(&as_alice(&broker, &["send", "--to", typo, "hi"])),
        format!("sealrelay: no instance of yours has the id {typo}: `sealrelay instance list` shows yours")
    );
    // Nobody serves the instance: said at once (PUBACK 0x10), not after the whole timeout.
    let asked = Instant::now();
    assert_eq!(
        refusal(&as_alice(&broker, &["send", "--to", &instance, "--timeout-secs", "60", "hi"])),
        format!("sealrelay: {instance} is not connected (the broker has no session for it), so nothing was delivered: start its agent, then retry")
    );
    assert!(asked.elapsed() < Duration::from_secs(60));
    // The MQTT side names the address it could not reach, as the HTTP side does.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = as_alice(
        &broker,
        &[
            "send",
            "--to",
            &instance,
            "--broker",
            &format!("mqtt://{dead}"),
            "hi",
        ],
    );
    let line = refusal(&unreachable);
    assert!(
        line.starts_with(&format!("sealrelay: MQTT: mqtt://{dead}: ")) && line.contains("refused"),
        "{line}"
    );
    // A removed instance's token says why it no longer works.
    run_cli_ok(
        broker.cli(),
        &[
            "instance",
            "remove",
            "--user",
            "alice",
            "--instance",
            &instance,
        ],
        PASSWORD,
    );
    let agent = broker
        .cli()
        .arg("agent")
        .env("SEALRELAY_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        refusal(&agent),
        format!("sealrelay: this token no longer logs in to instance {instance}: the instance was removed, or its token was rotated or re-enrolled; its owner makes a new one (`sealrelay instance rotate-token` or `reenrol`)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_normal_end_of_send_is_recorded_as_a_disconnect_and_list_shows_dates() {
    let broker = Broker::start();
    let (instance, token) = alice_with_an_instance(&broker);
    let agent = broker.start_agent(&token, "5");
    let out = as_alice(&broker, &["send", "--to", &instance, "hello"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let listed =
        String::from_utf8_lossy(&as_alice(&broker, &["instance", "list"]).stdout).into_owned();
    assert!(listed.contains("online now"), "{listed}");

    let db = broker.database().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let reasons = loop {
        let rows = sqlx::query(
            "SELECT close_reason FROM session_log s JOIN principals p ON p.id = s.principal_id WHERE p.login = 'alice'",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let reasons: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if !reasons.is_empty() || Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reasons, ["client_disconnect"]);
    assert_eq!(
        broker.counter("sealrelay_sessions_closed_total{reason=\"connection_lost\"}"),
        0
    );
    drop(agent);

    // The agent is gone: when it was last seen, and when it was added, as dates with an age.
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let listed =
            String::from_utf8_lossy(&as_alice(&broker, &["instance", "list"]).stdout).into_owned();
        let row = listed
            .lines()
            .find(|l| l.starts_with(&instance))
            .unwrap()
            .to_owned();
        if !row.contains("online now") || Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let year = time_now_year();
    assert_eq!(row.matches(&format!("{year}-")).count(), 2, "{row}");
    assert!(row.contains("(just now)") || row.contains("ago)"), "{row}");
    assert!(!row.contains("1796"), "no Unix seconds: {row}");
}

fn time_now_year() -> u64 {
    // 1970 + whole 365.2425-day years: exact enough away from New Year's Eve.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    1970 + secs * 10_000 / (3_652_425 * 86_400)
}

/// `sealrelay agent` with `token`, and the first line it printed on stderr (its stderr kept
/// open: the agent goes on writing a line per attempt).
fn agent_retrying(broker: &Broker, token: &str) -> (Child, BufReader<ChildStderr>, String) {
    let mut agent = broker
        .cli()
        .arg("agent")
        .env("SEALRELAY_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    (agent, stderr, first)
}

/// Waits for the agent to say it serves, then stops it.
fn assert_serves(mut agent: Child) {
    let mut serving = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut serving)
        .unwrap();
    assert!(serving.contains("; serving"), "{serving}");
    agent.kill().unwrap();
    agent.wait().unwrap();
}

#[test]
fn an_agent_started_before_its_broker_waits_for_it() {
    let mut broker = Broker::start();
    let (_, token) = alice_with_an_instance(&broker);
    broker.stop();
    let (agent, _stderr, first) = agent_retrying(&broker, &token);
    assert!(
        first.starts_with("sealrelay agent: cannot reach the server: ")
            && first
                .trim_end()
                .ends_with("; attempt 1 of 8, retrying in 500ms"),
        "{first}"
    );
    broker.restart();
    assert_serves(agent);
}

#[test]
fn each_verb_lists_the_options_it_uses() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    for verb in [
        &["user", "register"][..],
        &["user", "passwd"],
        &["instance", "list"],
        &["instance", "add"],
    ] {
        let text = help(verb);
        assert!(text.contains("--server <URL>"), "{verb:?}: {text}");
        assert!(
            !text.contains("--broker") && !text.contains("--mqtt-version"),
            "{verb:?} talks HTTP only: {text}"
        );
    }
    for verb in [&["send"][..], &["agent"]] {
        let text = help(verb);
        assert!(
            text.contains("--broker <URL>") && text.contains("--mqtt-version <5|3.1.1>"),
            "{text}"
        );
    }
    assert!(help(&["send"])
        .contains("Usage: sealrelay send [OPTIONS] --user <NAME> --to <ID> [MESSAGE]"));
    assert!(help(&[]).contains(
        "instance        Manage your instances: add, list, rotate a token, re-enrol, pin, remove"
    ));
    let serve = help(&["serve"]);
    assert!(
        serve.contains("SEALRELAY_<SECTION>_<KEY>") && serve.contains("check-config"),
        "{serve}"
    );
}

/// A login refused for too many failures is temporary: the agent waits the window out
/// instead of exiting for good (it used to take CONNACK 0x9F as final).
#[test]
fn an_agent_rate_limited_at_start_waits_the_window_out() {
    let broker = Broker::start_with(&[
        ("SEALRELAY_AUTH_MAX_FAILURES_PER_LOGIN", "1"),
        ("SEALRELAY_AUTH_FAILURE_WINDOW_SECS", "2"),
    ]);
    let (instance, token) = alice_with_an_instance(&broker);
    // Someone guesses at the instance's login once: it is now locked for the window.
    let guess = ureq::get(&format!("http://{}/v1/me", broker.http))
        .header(
            "Authorization",
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{instance}:not-the-secret")
                )
            ),
        )
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(guess.status(), 401);
    let (agent, _stderr, first) = agent_retrying(&broker, &token);
    assert_eq!(
        first.trim_end(),
        format!("sealrelay agent: too many failed logins for {instance} or from this address: wait a minute, then retry; attempt 1 of 8, retrying in 500ms")
    );
    assert_serves(agent);
}
