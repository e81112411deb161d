//! Bad profiles fail before anything starts, naming file, line and column.

use std::path::Path;

use pv_launch::Profile;

fn pvsc(text: &str) -> String {
    pv_launch::profile::pvsc::load_str(Path::new("bad.pvsc"), text)
        .unwrap_err()
        .to_string()
}

fn toml(text: &str) -> String {
    pv_launch::profile::toml::load_str(Path::new("bad.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn pvsc_errors_have_line_and_column() {
    assert!(
        pvsc("<Servers>\n  <Server name='a'\n</Servers>")
            .starts_with("bad.pvsc:3:1: malformed XML"),
        "{}",
        pvsc("<Servers>\n  <Server name='a'\n</Servers>")
    );
    let e = pvsc("<Configs/>");
    assert!(
        e.starts_with("bad.pvsc:1:1:") && e.contains("expected <Servers>"),
        "{e}"
    );
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://h'>\n  <CommandStartup><Options><Option name='X'><Slider/></Option></Options><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>",
    );
    assert!(
        e.starts_with("bad.pvsc:3:45:") && e.contains("unknown option type <Slider>"),
        "{e}"
    );
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://h'>\n  <CommandStartup><Options><Option name='X'><Range min='1' max='9' default='10'/></Option></Options><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>",
    );
    assert!(
        e.starts_with("bad.pvsc:3:") && e.contains("outside 1..=9"),
        "{e}"
    );
    let e = pvsc("<Servers>\n <Server name='a' resource='cs://h'/>\n</Servers>");
    assert!(
        e.starts_with("bad.pvsc:2:2:")
            && e.contains("neither <ManualStartup/> nor <CommandStartup>"),
        "{e}"
    );
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://h:99999'><ManualStartup/></Server>\n</Servers>",
    );
    assert!(e.starts_with("bad.pvsc:2:"), "{e}");
}

#[test]
fn a_self_referencing_pvsc_variable_is_an_error() {
    let text = "<Servers><Server name='a' resource='cs://h'><CommandStartup><Options><Set name='A' value='x$A$'/></Options><Command exec='run'><Arguments><Argument value='$A$'/></Arguments></Command></CommandStartup></Server></Servers>";
    let profile = pv_launch::profile::pvsc::load_str(Path::new("loop.pvsc"), text).unwrap();
    let err = pv_launch::Plan::resolve(
        &profile.servers[0],
        &pv_launch::LaunchContext::fixed(),
        &pv_launch::NonInteractive,
    )
    .unwrap_err();
    assert!(err.to_string().contains("never ends"), "{err}");
}

#[test]
fn toml_errors_have_line_and_column() {
    let e = toml("[[server]]\nname = \"a\"\nresource = \"cs://h\"\ncolour = 1\n");
    assert!(
        e.starts_with("bad.toml:4:1:") && e.contains("colour"),
        "{e}"
    );
    let e = toml("[[server]]\nname = \"a\"\nresource = 5\n");
    assert!(e.starts_with("bad.toml:3:12:"), "{e}");
    let e = toml(
        "[[server]]\nname = \"a\"\nresource = \"cs://h\"\n[server.startup]\nmechanism = \"local\"\nargv = [\"run\", \"--n=${NODES}\"]\n",
    );
    assert!(
        e.starts_with("bad.toml:6:21:") && e.contains("unknown variable `${NODES}`"),
        "{e}"
    );
    let e = toml(
        "[[server]]\nname = \"a\"\nresource = \"cs://h\"\n[[server.option]]\nname = \"N\"\ntype = \"int\"\nmin = 1\nmax = 4\ndefault = 5\n",
    );
    assert!(
        e.starts_with("bad.toml:9:11:") && e.contains("outside 1..=4"),
        "{e}"
    );
    let e = toml("[[server]]\nname = \"a\"\nresource = \"cs://h:x\"\n");
    assert!(e.starts_with("bad.toml:3:"), "{e}");
}

/// The plan of the first server of the TOML profile `text` (`pw.toml`), in a fixed context
/// without prompts.
fn resolve_toml(text: &str) -> Result<pv_launch::Plan, pv_launch::PlanError> {
    let p = pv_launch::profile::toml::load_str(Path::new("pw.toml"), text).unwrap();
    pv_launch::Plan::resolve(
        &p.servers[0],
        &pv_launch::LaunchContext::fixed(),
        &pv_launch::NonInteractive,
    )
}

/// A plan with a client program keeps no plain copy of a password option for it (the
/// client's command line may not use one): its Debug output does not show it.
#[test]
fn a_client_plan_holds_no_copy_of_a_secret() {
    let text = "client = [\"echo\", \"${PV_LAUNCH_URL}\", \"${HOST}\"]\n[[server]]\nname = \"a\"\nresource = \"cs://h\"\n[server.startup]\nmechanism = \"local\"\nargv = [\"run\"]\n[[server.option]]\nname = \"PW\"\ntype = \"password\"\ndefault = \"hunter2\"\n[[server.option]]\nname = \"HOST\"\ntype = \"string\"\ndefault = \"node7\"\n";
    let plan = resolve_toml(text).unwrap();
    let client = plan.client().expect("a client plan");
    assert!(!format!("{client:?}").contains("hunter2"), "{client:?}");
    let launch = [("PV_LAUNCH_URL".to_string(), "cs://h:1".to_string())].into();
    assert_eq!(
        client.render(&launch).unwrap(),
        ["echo", "cs://h:1", "node7"],
        "plain options still reach the client"
    );
}

#[test]
fn secrets_never_reach_argv_or_dry_run_output() {
    let text = "[[server]]\nname = \"a\"\nresource = \"cs://h\"\n[server.startup]\nmechanism = \"local\"\nargv = [\"run\"]\n[[server.option]]\nname = \"PW\"\ntype = \"password\"\ndefault = \"hunter2\"\n";
    let plan = resolve_toml(text).unwrap();
    let out = plan.to_dry_run_text() + &plan.to_json().to_string() + &format!("{plan:?}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("PW=<secret>"));
    let bad = text.replace("argv = [\"run\"]", "argv = [\"run\", \"${PW}\"]");
    let err = resolve_toml(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("may not be placed on a command line"),
        "{err}"
    );
}

#[test]
fn several_servers_need_a_choice() {
    let p = Profile::load(Path::new(
        "tests/data/pvsc-corpus/cscs-alps-uenv-servers.pvsc",
    ))
    .unwrap();
    let e = p.select(None).unwrap_err().to_string();
    assert!(
        e.contains("--server")
            && e.contains("\"My Server\"")
            && e.contains("Reverse-Connect-eiger"),
        "{e}"
    );
}

#[test]
fn import_writes_a_profile_that_loads_with_the_same_argv() {
    for f in [
        "olcf-andes.pvsc",
        "artracfd-sharcnet.pvsc",
        "olcf-frontier.pvsc",
        "cscs-alps-uenv-servers.pvsc",
    ] {
        let path = Path::new("tests/data/pvsc-corpus").join(f);
        let original = Profile::load(&path).unwrap();
        let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
        let imported = pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
            .unwrap_or_else(|e| panic!("{f}: {e}\n{toml_text}"));
        assert_eq!(imported.servers.len(), original.servers.len());
        for (a, b) in original.servers.iter().zip(&imported.servers) {
            let ctx = pv_launch::LaunchContext::fixed();
            let pa = pv_launch::Plan::resolve(a, &ctx, &pv_launch::NonInteractive).unwrap();
            let pb = pv_launch::Plan::resolve(b, &ctx, &pv_launch::NonInteractive).unwrap();
            let argv = |p: &pv_launch::Plan| match p.launch() {
                pv_launch::plan::Launch::Process(p) => match &p.place {
                    pv_launch::plan::Place::Local(l) => l.argv.clone(),
                    pv_launch::plan::Place::Ssh(s) => s.remote.argv.clone(),
                },
                _ => vec![],
            };
            // Argument lists differ only where ParaView's re-splitting drops empty values.
            if pa
                .warnings()
                .iter()
                .all(|w| !w.message.contains("disappears"))
            {
                assert_eq!(argv(&pa), argv(&pb), "{f}: {}", a.name);
            }
        }
    }
}

/// Found by fuzzing (fuzz target `profile_pvsc`): a `.pvsc` that sets a name twice, repeats
/// a case value, or sets a name that is no bare TOML key loads, but its import wrote a key
/// or table twice, or a dotted key, and so did not load. The import keeps what the
/// original does: the last `<Set>` of a name, the first `<Case>` of a value.
#[test]
fn import_of_repeated_sets_and_cases_loads_with_the_same_values() {
    let text = r#"<Servers>
  <Server name="s" resource="cs://localhost:11111">
    <CommandStartup>
      <Options>
        <Set name="MODE" value="first"/>
        <Set name="MODE" value="last"/>
        <Switch name="PV_CLIENT_PLATFORM">
          <Case value="Linux">
            <Set name="TERM" value="first"/>
            <Set name="TERM" value="last"/>
            <Set name="odd.name" value="x"/>
          </Case>
          <Case value="Linux">
            <Set name="TERM" value="never"/>
          </Case>
        </Switch>
      </Options>
      <Command exec="echo">
        <Arguments>
          <Argument value="$MODE$"/>
          <Argument value="$TERM$"/>
        </Arguments>
      </Command>
    </CommandStartup>
  </Server>
</Servers>"#;
    let original = pv_launch::profile::pvsc::load_str(Path::new("repeated.pvsc"), text).unwrap();
    let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
    let imported = pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    let mut ctx = pv_launch::LaunchContext::fixed();
    ctx.client_platform = "Linux".into();
    let argv = |entry: &pv_launch::ServerEntry| {
        let plan = pv_launch::Plan::resolve(entry, &ctx, &pv_launch::NonInteractive).unwrap();
        match plan.launch() {
            pv_launch::plan::Launch::Process(p) => match &p.place {
                pv_launch::plan::Place::Local(l) => l.argv.clone(),
                pv_launch::plan::Place::Ssh(s) => s.remote.argv.clone(),
            },
            _ => panic!("not a process start"),
        }
    };
    assert_eq!(argv(&original.servers[0]), ["echo", "last", "last"]);
    assert_eq!(
        argv(&imported.servers[0]),
        ["echo", "last", "last"],
        "{toml_text}"
    );
}

/// Found by fuzzing (fuzz target `profile_pvsc`): an `<Enumeration>` without entries
/// loaded, but its import did not (a TOML enumeration needs entries). ParaView would offer
/// nothing to choose, so it is an error here, with line and column.
#[test]
fn pvsc_enumeration_without_entries_is_an_error() {
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://h'>\n  <CommandStartup><Options><Option name='Q'>\n   <Enumeration default='x'>\n   </Enumeration></Option></Options><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>",
    );
    assert!(
        e.starts_with("bad.pvsc:4:4:") && e.contains("has no <Entry>"),
        "{e}"
    );
}

/// Found by fuzzing (fuzz target `profile_pvsc`): a `$NAME$` whose name holds a newline or
/// another control character went as it was into a `# note:` comment of the import, which
/// then did not load (or, with a newline, turned the rest of the note into TOML).
#[test]
fn import_notes_with_control_characters_stay_comments() {
    let text = "<Servers>\n <Server name='s' resource='cs://localhost:11111'>\n  <CommandStartup>\n   <Command exec='echo'><Arguments>\n    <Argument value='$a&#10;[x]&#10;b$'/>\n    <Argument value='$c&#127;$'/>\n   </Arguments></Command>\n  </CommandStartup>\n </Server>\n</Servers>";
    let original = pv_launch::profile::pvsc::load_str(Path::new("control.pvsc"), text).unwrap();
    let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
    assert!(toml_text.contains("# note: $a\\n[x]\\nb$"), "{toml_text}");
    pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
}

/// Found by fuzzing (fuzz target `profile_pvsc`): a number of seconds that no `Duration`
/// holds (NaN, infinite, 1e300) made the loaders panic in `Duration::from_secs_f64`. It is
/// an error at the value now, in both formats.
#[test]
fn seconds_that_fit_no_duration_are_errors_not_panics() {
    for (attrs, at) in [
        ("timeout='nan'", "bad.pvsc:2:"),
        ("timeout='inf'", "bad.pvsc:2:"),
    ] {
        let e = pvsc(&format!(
            "<Servers>\n <Server name='a' resource='cs://h' {attrs}>\n  <CommandStartup><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>"
        ));
        assert!(
            e.starts_with(at) && e.contains("not a usable number of seconds"),
            "{e}"
        );
    }
    for attrs in ["delay='1e300'", "process_wait='inf'", "delay='nan'"] {
        let e = pvsc(&format!(
            "<Servers>\n <Server name='a' resource='cs://h'>\n  <CommandStartup><Command exec='x' {attrs}/></CommandStartup>\n </Server>\n</Servers>"
        ));
        assert!(
            e.starts_with("bad.pvsc:3:") && e.contains("not a usable number of seconds"),
            "{e}"
        );
    }
    let startup = "[server.startup]\nmechanism = \"local\"\nargv = [\"x\"]\n";
    for (server, startup_extra, line) in [
        ("connect_timeout = nan\n", "", 4),
        ("connect_timeout = inf\n", "", 4),
        ("", "delay = 1e300\n", 7),
        ("", "process_start_timeout = inf\n", 7),
    ] {
        let e = toml(&format!(
            "[[server]]\nname = \"a\"\nresource = \"cs://h\"\n{server}{startup}{startup_extra}"
        ));
        assert!(
            e.starts_with(&format!("bad.toml:{line}:"))
                && e.contains("not a usable number of seconds"),
            "{e}"
        );
    }
}

/// Found by fuzzing (fuzz target `profile_pvsc`): a name set only in a `<Case>` that can
/// never match (an earlier one has its value, and the import leaves it out) was still taken
/// as known, so the import wrote `${TERM}` for it and did not load.
#[test]
fn import_refers_only_to_variables_it_writes() {
    let text = r#"<Servers>
  <Server name="s" resource="cs://localhost:11111">
    <CommandStartup>
      <Options>
        <Set name="a.b" value="x"/>
        <Switch name="PV_CLIENT_PLATFORM">
          <Case value="Linux"><Set name="MODE" value="m"/></Case>
          <Case value="Linux"><Set name="TERM" value="never"/></Case>
        </Switch>
      </Options>
      <Command exec="echo">
        <Arguments><Argument value="$TERM$"/><Argument value="$a.b$"/><Argument value="$MODE$"/></Arguments>
      </Command>
    </CommandStartup>
  </Server>
</Servers>"#;
    let original = pv_launch::profile::pvsc::load_str(Path::new("dead.pvsc"), text).unwrap();
    let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
    assert!(
        toml_text.contains("${env:TERM}") && toml_text.contains("${MODE}"),
        "{toml_text}"
    );
    pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
}

/// Found by fuzzing (fuzz target `profile_pvsc`): a `<Switch>` without `<Case>` loaded, but
/// its import had no `cases` and did not load.
#[test]
fn import_of_a_switch_without_cases_loads() {
    let text = "<Servers>\n <Server name='s' resource='cs://h'>\n  <CommandStartup><Options>\n   <Switch name='PV_CLIENT_PLATFORM'/>\n  </Options><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>";
    let original = pv_launch::profile::pvsc::load_str(Path::new("switch.pvsc"), text).unwrap();
    let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
    let imported = pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    assert_eq!(
        imported.servers[0].assignments.len(),
        original.servers[0].assignments.len()
    );
}

#[test]
fn a_double_default_off_its_step_is_an_error_with_its_position() {
    let profile = |step: &str, default: &str| {
        format!(
            "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:0\"\n[server.startup]\n\
             mechanism = \"local\"\nargv = [\"true\"]\n[[server.option]]\nname = \"F\"\ntype = \"double\"\n\
             min = 0\nmax = 2\n{step}default = {default}\n"
        )
    };
    let e = toml(&profile("step = 0.25\n", "0.3"));
    assert!(
        e.starts_with("bad.toml:13:11:")
            && e.contains("default 0.3 is not 0 plus a multiple of the step 0.25"),
        "{e}"
    );
    // Within rounding: 0.3 is three 0.1 steps although 0.3 / 0.1 is not exactly 3.
    for (step, default) in [
        ("step = 0.1\n", "0.3"),
        ("step = 0.25\n", "1.75"),
        ("", "0.3"),
    ] {
        let text = profile(step, default);
        if let Err(e) = pv_launch::profile::toml::load_str(Path::new("ok.toml"), &text) {
            panic!("{step}{default}: {e}");
        }
    }
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://h'>\n  <CommandStartup><Options><Option name='X'><Range type='double' min='0' max='2' step='0.25' default='0.3'/></Option></Options><Command exec='x'/></CommandStartup>\n </Server>\n</Servers>",
    );
    assert!(
        e.starts_with("bad.pvsc:3:") && e.contains("not 0 plus a multiple of the step 0.25"),
        "{e}"
    );
}

#[test]
fn import_comments_each_argument_paraviews_resplitting_changes() {
    let text = r#"<Servers>
  <Server name="r" resource="cs://localhost:11111">
    <CommandStartup>
      <Options>
        <Option name="TITLE"><String default="my run"/></Option>
        <Option name="EXTRA"><String default=""/></Option>
      </Options>
      <Command exec="pvserver">
        <Arguments>
          <Argument value="--title=$TITLE$"/>
          <Argument value="$EXTRA$"/>
          <Argument value="--port=$PV_SERVER_PORT$"/>
        </Arguments>
      </Command>
    </CommandStartup>
  </Server>
</Servers>"#;
    let original = pv_launch::profile::pvsc::load_str(Path::new("split.pvsc"), text).unwrap();
    let toml_text = pv_launch::profile::pvsc::import::to_toml(&original);
    let lines: Vec<&str> = toml_text.lines().collect();
    let before = |element: &str| {
        let i = lines
            .iter()
            .position(|l| l.trim() == element)
            .unwrap_or_else(|| panic!("{element}\n{toml_text}"));
        lines[i - 1].trim()
    };
    assert!(
        before("\"--title=${TITLE}\",").starts_with("# ParaView, with the defaults: argument \"--title=$TITLE$\" becomes 2 arguments ([\"--title=my\", \"run\"])"),
        "{toml_text}"
    );
    assert!(
        before("\"${EXTRA}\",").contains("is empty after substitution and disappears"),
        "{toml_text}"
    );
    assert!(
        !before("\"--port=${PV_SERVER_PORT}\",").starts_with('#'),
        "{toml_text}"
    );
    // The comments leave the file loadable.
    pv_launch::profile::toml::load_str(Path::new("imported.toml"), &toml_text)
        .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
}

#[test]
fn a_delay_the_native_handshake_ignores_is_a_warning() {
    let text = |handshake: &str| {
        format!(
            "[[server]]\nname = \"x\"\nresource = \"cs://127.0.0.1:0\"\n{handshake}[server.startup]\n\
             mechanism = \"local\"\nargv = [\"pv-demo-server\"]\ndelay = 2\n"
        )
    };
    let warnings = |t: &str| {
        let p = pv_launch::profile::toml::load_str(Path::new("d.toml"), t).unwrap();
        let ctx = pv_launch::LaunchContext::fixed();
        let plan =
            pv_launch::Plan::resolve(&p.servers[0], &ctx, &pv_launch::NonInteractive).unwrap();
        plan.warnings()
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
    };
    let native = warnings(&text(""));
    assert!(
        native
            .iter()
            .any(|w| w.starts_with("d.toml:1:1: warning: delay = 2 is not used")),
        "{native:?}"
    );
    let none = warnings(&text("handshake = \"none\"\n"));
    assert!(!none.iter().any(|w| w.contains("delay")), "{none:?}");
}

#[test]
fn a_bad_resource_is_shown_with_a_caret_under_the_offending_character() {
    let e = toml(
        "[[server]]\nname = \"x\"\nresource = \"cs://host:70000\"\n[server.startup]\n\
         mechanism = \"local\"\nargv = [\"x\"]\n",
    );
    assert_eq!(
        e,
        "bad.toml:3:23: port 70000 is out of range 0-65535\n  cs://host:70000\n            ^",
    );
    let e = pvsc(
        "<Servers>\n <Server name='a' resource='cs://[::1'><ManualStartup/></Server>\n</Servers>",
    );
    assert!(
        e.starts_with("bad.pvsc:2:") && e.ends_with("\n  cs://[::1\n       ^"),
        "{e}"
    );
}
