//! The web console (`web/`) in a real headless Chromium against a real broker over HTTPS and
//! WSS: node's test runner drives the browser with playwright-core (web/test/console.test.mjs)
//! while this side starts the broker and hands it the addresses, the CLI for the agent and the
//! operator's reset, and the database a lying server would rewrite. Also checks what the broker
//! itself promises about the page: served over HTTPS only, under a policy that forbids inline
//! and third-party scripts. Needs `npm ci --prefix web` and `/usr/bin/chromium` (.ci/run
//! installs both).

mod common;

use common::Broker;

/// The browser: Debian's Chromium, or the one `SRTEST_CHROMIUM` names.
fn chromium() -> String {
    let path = std::env::var("SRTEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium (.ci/run does) or set SRTEST_CHROMIUM"
    );
    path
}

#[test]
fn the_console_in_headless_chromium() {
    let mut broker = Broker::start();
    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-console");
    std::fs::create_dir_all(&screenshots).unwrap();
    let (restart_request, restarted) = (
        broker.dir.path().join("restart-request"),
        broker.dir.path().join("restarted"),
    );
    let cli = broker.cli();
    let cli_env: serde_json::Map<String, serde_json::Value> = cli
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.into())))
        .collect();
    let cases = serde_json::json!({
        "https": format!("https://{}/", broker.https),
        "wss": format!("wss://{}/mqtt", broker.wss),
        "http": format!("http://{}", broker.http),
        "ws": format!("ws://{}/mqtt", broker.ws),
        "bin": common::BIN,
        "dev_cert": broker.dev_cert(),
        "cli_env": cli_env,
        "admin_args": ["admin", "reset-user", "--config", "broker.toml", "--admin-url", format!("http://{}", broker.admin)],
        "broker_dir": broker.dir.path(),
        "db": broker.db_path(),
        "db_url": broker.directory_url(),
        "screenshots": screenshots,
        "chromium": chromium(),
        "restart_request": restart_request,
        "restarted": restarted,
    });
    let mut node = common::node_test(
        "web",
        "playwright-core",
        "test/console.test.mjs",
        "SRTEST_WEB_CONSOLE",
        &cases,
    )
    .spawn()
    .expect("node (Node 20) on PATH");
    // The last browser test asks for a restart: the page must say it lost the broker and that
    // it is back, on the same ports.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !restart_request.exists() && node.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the browser tests hung"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if restart_request.exists() {
        broker.stop();
        std::thread::sleep(std::time::Duration::from_secs(1));
        std::fs::write(&restarted, b"").unwrap();
        broker.restart();
    }
    common::node_report(node.wait_with_output().unwrap(), 14);
    for shot in [
        "00-register",
        "01b-token-online",
        "02-reply",
        "02b-activity",
        "03-wrong-password",
        "04-reset-signed-out",
        "05-stale-key",
        "06-pin-mismatch",
        "06a-offline",
        "06b-two-tabs",
        "07-reconnecting",
        "07b-unreachable",
        "08-rolled-back",
        "10-reloaded",
        "11-phone-token",
        "11-phone-account",
        "12-unreachable",
        "13-named",
    ] {
        assert!(screenshots.join(format!("{shot}.png")).is_file(), "{shot}");
    }
}

/// What the page says when something fails is what docs/console.md lists, and every API error
/// code has words (web/test/words.test.mjs; no browser or broker needed).
#[test]
fn the_console_says_what_the_docs_list_for_every_error() {
    let node = common::node_test(
        "web",
        "playwright-core",
        "test/words.test.mjs",
        "SRTEST_UNUSED",
        &serde_json::Value::Null,
    )
    .output()
    .expect("node (Node 20) on PATH");
    common::node_report(node, 3);
}

/// The page is never served over plain HTTP (where the password would travel in the clear),
/// and over HTTPS every file comes under a policy that allows this origin's scripts and
/// WebAssembly only, with the MQTT URL the page uses.
#[test]
fn the_console_is_served_over_https_only_under_a_strict_policy() {
    let broker = Broker::start();
    let plain = ureq::get(&format!("http://{}/", broker.http))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(plain.status(), 404);
    let agent = lax_agent();
    let page = agent
        .get(&format!("https://127.0.0.1:{}/", broker.https.port()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    // The page names its script and style sheet by their content's hash.
    let (script, style) = (named(&page, "src", ".js"), named(&page, "href", ".css"));
    for (path, media) in [
        ("/", "text/html"),
        (script.as_str(), "text/javascript"),
        (style.as_str(), "text/css"),
        ("/console.json", "application/json"),
    ] {
        let mut answer = agent
            .get(&format!("https://127.0.0.1:{}{path}", broker.https.port()))
            .call()
            .unwrap();
        let header = |name: &str| header_of(&answer, name).unwrap_or_default();
        assert!(header("content-type").starts_with(media), "{path}");
        let policy = header("content-security-policy");
        assert!(
            policy.contains("script-src 'self' 'wasm-unsafe-eval';")
                && policy.contains("default-src 'none'")
                && policy.contains(&format!(
                    "connect-src 'self' wss://127.0.0.1:{};",
                    broker.wss.port()
                ))
                && !policy.contains("unsafe-inline"),
            "{path}: {policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("strict-transport-security"), "max-age=31536000");
        if path == "/console.json" {
            let site: serde_json::Value =
                serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
            assert_eq!(
                site["mqtt_url"],
                format!("wss://127.0.0.1:{}/mqtt", broker.wss.port())
            );
        }
    }
    // The page's MQTT link names the host it was loaded from only if the certificate covers
    // that host: a `Host` chosen by the sender (a rebinding domain, a forged header) sends
    // the console nowhere, and its policy allows no connection there.
    for (host, expected) in [
        ("localhost", Some("localhost")),
        ("rebound.example", None),
        ("127.0.0.2", None),
    ] {
        let mut answer = agent
            .get(&format!(
                "https://127.0.0.1:{}/console.json",
                broker.https.port()
            ))
            .header("Host", format!("{host}:{}", broker.https.port()))
            .call()
            .unwrap();
        let policy = header_of(&answer, "content-security-policy").unwrap();
        let site: serde_json::Value =
            serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
        match expected {
            Some(named) => {
                let url = format!("wss://{named}:{}/mqtt", broker.wss.port());
                assert_eq!(site["mqtt_url"], url, "{host}");
                assert!(policy.contains(&format!("connect-src 'self' wss://{named}:")));
            }
            None => {
                assert_eq!(site["mqtt_url"], serde_json::Value::Null, "{host}");
                assert!(policy.contains("connect-src 'self';"), "{host}: {policy}");
            }
        }
    }
    // No inline script: every <script> loads this origin's file.
    assert!(page.contains(&format!(
        r#"<script type="module" src="{script}"></script>"#
    )));
    assert_eq!(page.matches("<script").count(), 1);
}

/// A visit costs what it must (issue 28): the script and style sheet are cached for good (their
/// paths name their content), the page is revalidated (304 while unchanged), and each comes
/// precompressed in the best encoding the browser takes.
#[test]
fn the_console_is_served_precompressed_cached_for_good_and_revalidated() {
    let broker = Broker::start();
    let agent = lax_agent();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", broker.https.port());
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut request = agent.get(&url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.call().unwrap()
    };
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist");
    let mut first = get("/", &[]);
    let page = first.body_mut().read_to_string().unwrap();
    assert_eq!(
        page.as_bytes(),
        std::fs::read(dist.join("index.html")).unwrap()
    );
    assert_eq!(
        header_of(&first, "cache-control").as_deref(),
        Some("no-cache")
    );
    let etag = header_of(&first, "etag").expect("the page has a validator");
    let again = get("/", &[("If-None-Match", etag.as_str())]);
    assert_eq!(again.status(), 304, "an unchanged page is not sent again");
    assert_eq!(
        get("/", &[("If-None-Match", "W/\"another build\"")]).status(),
        200
    );
    let script = named(&page, "src", ".js");
    for (path, file) in [("/", "index.html"), (script.as_str(), "console.js")] {
        for (accept, coding, suffix) in [
            ("gzip, deflate, br, zstd", Some("br"), ".br"),
            ("gzip, deflate", Some("gzip"), ".gz"),
            ("identity", None, ""),
        ] {
            let mut answer = get(path, &[("Accept-Encoding", accept)]);
            assert_eq!(
                header_of(&answer, "content-encoding").as_deref(),
                coding,
                "{path} {accept}"
            );
            assert_eq!(
                header_of(&answer, "vary").as_deref(),
                Some("Accept-Encoding")
            );
            let body = answer
                .body_mut()
                .with_config()
                .limit(4 << 20)
                .read_to_vec()
                .unwrap();
            assert!(
                body == std::fs::read(dist.join(format!("{file}{suffix}"))).unwrap(),
                "{path} {accept}: not web/dist/{file}{suffix}"
            );
            if path != "/" {
                assert_eq!(
                    header_of(&answer, "cache-control").as_deref(),
                    Some("public, max-age=31536000, immutable")
                );
            }
        }
    }
    // The old unhashed path is gone: nothing can be cached under a name that outlives a build.
    assert_eq!(get("/console.js", &[]).status(), 404);
}

/// No answer of the API is kept by a cache or sniffed (issue 28): a user's own wrapped key
/// from `/v1/me`, an error, the operator's answers; HSTS comes with every answer over TLS
/// and never over plain HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn api_answers_are_never_cached_nor_sniffed_and_tls_ones_say_hsts() {
    let broker = Broker::start();
    let alice = broker.user("alice").await;
    let agent = lax_agent();
    let auth = common::basic_auth(&alice.login, alice.auth_secret());
    let token = broker.admin_token();
    for (url, authorization, status, tls) in [
        (
            format!("http://{}/v1/me", broker.http),
            auth.clone(),
            200,
            false,
        ),
        (
            format!("https://127.0.0.1:{}/v1/me", broker.https.port()),
            auth,
            200,
            true,
        ),
        (
            format!("http://{}/v1/nothing-here", broker.http),
            String::new(),
            404,
            false,
        ),
        (
            format!("http://{}/v1/admin/users", broker.admin),
            format!("Bearer {token}"),
            200,
            false,
        ),
    ] {
        let answer = agent
            .get(&url)
            .header("Authorization", &authorization)
            .call()
            .unwrap();
        let header = |name: &str| header_of(&answer, name);
        assert_eq!(answer.status(), status, "{url}");
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-store"),
            "{url}"
        );
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{url}"
        );
        assert_eq!(
            header("strict-transport-security").is_some(),
            tls,
            "HSTS over TLS only: {url}"
        );
    }
}

/// An HTTP client for header checks: the certificate is not the point here
/// (tests/transports.rs checks it), and 4xx answers are answers, not errors.
fn lax_agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
            .build(),
    )
}

/// The path the console's page gives as `attribute` (src, href) of its file ending in `ext`:
/// `/console.<hash><ext>`.
fn named(page: &str, attribute: &str, ext: &str) -> String {
    let at = page.find(&format!("{attribute}=\"/console.")).unwrap() + attribute.len() + 2;
    let path = &page[at..at + page[at..].find('"').unwrap()];
    assert!(path.ends_with(ext), "{path}");
    path.to_owned()
}

/// The value of `name` in `answer`'s headers, if it has it.
fn header_of(answer: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    answer
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
