//! Start on login writes the platform's entry and removes it again (Linux: an XDG autostart file).
//! Its own test binary: it points XDG_CONFIG_HOME at a temporary directory for the whole process.

#[cfg(target_os = "linux")]
#[test]
fn start_on_login_adds_and_removes_the_xdg_autostart_entry() {
    use hum_app_lib::commands::desktop::{
        MINIMIZED_ARG, autostart_enabled, autostart_entry, autostart_text, set_autostart,
    };

    let config = tempfile::tempdir().unwrap();
    let config = config.path().join("not-yet-created");
    // SAFETY: this test binary has this one test; nothing else reads the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("XDG_CONFIG_HOME", &config)
    };
    let entry = config.join("autostart/hum.desktop");
    assert_eq!(autostart_entry().unwrap(), entry);
    assert!(!autostart_enabled().unwrap());
    set_autostart(false).expect("turning off what is off is fine");
    set_autostart(true).unwrap();
    assert!(autostart_enabled().unwrap());
    let text = std::fs::read_to_string(&entry).expect("the autostart entry");
    let exe = std::env::current_exe().unwrap();
    assert!(
        text.contains(&format!("\nExec=\"{}\" {MINIMIZED_ARG}\n", exe.display())),
        "{text}"
    );
    set_autostart(false).unwrap();
    assert!(!entry.exists());
    assert!(!autostart_enabled().unwrap());

    // A program path with characters the Exec key must escape.
    let odd = std::path::Path::new("/opt/My Apps/hum \"$x`\\");
    let text = autostart_text(odd);
    assert!(
        text.contains(r#"Exec="/opt/My Apps/hum \\"\\$x\\`\\\\" --minimized"#),
        "{text}"
    );
}
