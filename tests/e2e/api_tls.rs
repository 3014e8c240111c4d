//! The REST API over TLS: a plain-HTTP listen beyond loopback is refused unless the site says
//! so; a daemon speaking TLS makes its certificate and writes its fingerprint, the CLI pins it
//! at first use and refuses the daemon once its certificate changed, until told the new one.

use crate::cluster::Node;

fn check(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.toml");
    std::fs::write(&path, toml).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_CONFIG")
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap()
}

#[test]
fn plain_http_beyond_loopback_is_refused_unless_asked_for() {
    let out = check("[api]\nlisten = \"0.0.0.0:7421\"\ntls = \"off\"\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("beyond loopback") && err.contains("allow_plain_http"), "{err}");
    let out = check("[api]\nlisten = \"0.0.0.0:7421\"\ntls = \"off\"\nallow_plain_http = true\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(check("[api]\nlisten = \"0.0.0.0:7421\"\n").status.success(), "TLS by default there");
}

#[test]
fn the_cli_pins_the_api_certificate_and_refuses_a_changed_one() {
    let mut node = Node::new("tls", "");
    node.kill9();
    let config = std::fs::read_to_string(node.config()).unwrap();
    let with_tls = config.replacen("[api]\n", "[api]\ntls = \"on\"\n", 1);
    assert_ne!(config, with_tls);
    std::fs::write(node.config(), &with_tls).unwrap();
    node.start();

    let data = node.data();
    let print = std::fs::read_to_string(data.join("api.fingerprint")).unwrap();
    assert!(print.starts_with("sha256:"), "{print}");
    assert!(node.log().contains(print.trim()), "the daemon logs the fingerprint");
    node.ok(&["standby", "status"]);
    assert_eq!(std::fs::read_to_string(data.join("api.pinned")).unwrap(), print, "pinned at first use");

    // The certificate changes (made anew): the CLI refuses to send its token.
    node.kill9();
    std::fs::remove_file(data.join("api.crt")).unwrap();
    std::fs::remove_file(data.join("api.key")).unwrap();
    node.start();
    let new = std::fs::read_to_string(data.join("api.fingerprint")).unwrap();
    assert_ne!(new, print);
    let out = node.cli(&["standby", "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate changed") && err.contains(new.trim()), "{err}");

    // Told the new one, it goes on.
    std::fs::write(
        node.config(),
        with_tls.replacen("[api]\n", &format!("[api]\npin = \"{}\"\n", new.trim()), 1),
    )
    .unwrap();
    node.ok(&["standby", "status"]);
}
