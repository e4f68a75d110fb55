//! Throwaway NATS servers for tests: Debian's `nats-server`, on free loopback ports, one
//! user with a password (brokers never log in anonymously), alone or three in a NATS
//! cluster; killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password every test server takes.
pub const USER: &str = "sealrelay";
pub const PASSWORD: &str = "nats-test-password";

pub struct Nats {
    /// Client ports, one per server.
    pub ports: Vec<u16>,
    /// Monitoring (HTTP) ports, one per server.
    monitors: Vec<u16>,
    servers: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nats-server is installed (.ci/run installs Debian's nats-server)")
}

impl Nats {
    /// One server.
    pub fn start() -> Nats {
        Nats::cluster(1)
    }

    /// One server that speaks TLS only, with a certificate for 127.0.0.1 that is its own
    /// CA; and that certificate's path (what `cluster.nats_ca_file` takes).
    pub fn start_tls() -> (Nats, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let (cert, key) = (dir.path().join("nats.crt"), dir.path().join("nats.key"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        let tls = format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n",
            cert.display(),
            key.display()
        );
        (Nats::launch(1, dir, &tls), cert)
    }

    /// `count` servers routed to each other as one NATS cluster.
    pub fn cluster(count: usize) -> Nats {
        Nats::launch(count, tempfile::tempdir().unwrap(), "")
    }

    /// `count` servers with their files in `dir`, each configured with `extra` too. Ports
    /// are probed free and then handed to nats-server, so another test may take one in
    /// between: a server that exits before it listens is started again on fresh ports.
    fn launch(count: usize, dir: tempfile::TempDir, extra: &str) -> Nats {
        let (mut dir, mut why) = (dir, String::new());
        for _ in 0..3 {
            match Nats::try_launch(count, dir, extra) {
                Ok(nats) => {
                    if count > 1 {
                        // Routes form within a second or so; a message before that reaches
                        // one server.
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    return nats;
                }
                Err((back, log)) => (dir, why) = (back, log),
            }
        }
        panic!("nats-server did not start three times; its log:\n{why}");
    }

    /// One attempt: the servers once every one listens; or, when one exits or stays deaf for
    /// 10 s, every server killed and `dir` given back with the failed one's log.
    fn try_launch(
        count: usize,
        dir: tempfile::TempDir,
        extra: &str,
    ) -> Result<Nats, (tempfile::TempDir, String)> {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let monitors: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let logs: Vec<PathBuf> = (0..count)
            .map(|i| dir.path().join(format!("nats-{i}.log")))
            .collect();
        let mut servers: Vec<Option<Child>> = (0..count)
            .map(|i| {
                let mut config = format!(
                    "listen: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                     authorization {{ user: {USER}, password: {PASSWORD} }}\n",
                    ports[i], monitors[i]
                );
                if count > 1 {
                    let others: Vec<String> = routes
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| format!("nats-route://127.0.0.1:{p}"))
                        .collect();
                    config += &format!(
                        "cluster {{ name: sealrelay, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                        routes[i],
                        others.join(", ")
                    );
                }
                config += extra;
                let file = dir.path().join(format!("nats-{i}.conf"));
                std::fs::write(&file, config).unwrap();
                Some(
                    Command::new(binary())
                        .arg("-c")
                        .arg(&file)
                        .stdout(Stdio::null())
                        .stderr(std::fs::File::create(&logs[i]).unwrap())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        for i in 0..count {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", ports[i])).is_err() {
                let exited = servers[i]
                    .as_mut()
                    .is_some_and(|s| matches!(s.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    for server in servers.iter_mut().flatten() {
                        let _ = server.kill();
                        let _ = server.wait();
                    }
                    let log = std::fs::read_to_string(&logs[i]).unwrap_or_default();
                    return Err((dir, log));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Nats {
            ports,
            monitors,
            servers,
            _dir: dir,
        })
    }

    /// The URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[i])
    }

    /// Every server's URL, comma-separated, server `i`'s first.
    pub fn urls_from(&self, i: usize) -> String {
        let n = self.ports.len();
        (0..n)
            .map(|k| self.url((i + k) % n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Clients connected to server `i` now (its monitoring endpoint's count).
    pub fn clients(&self, i: usize) -> u64 {
        let body = ureq::get(&format!("http://127.0.0.1:{}/varz", self.monitors[i]))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let at = body.find("\"connections\":").unwrap() + "\"connections\":".len();
        body[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.servers[i].take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
