//! The gatherer on hand-built streams: what goes to the server, what comes back to the client.

use super::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(&mut out, tag, &[body]);
    out
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

/// `Bind` (unnamed portal, no parameters), `Execute`, `Sync`: one statement as
/// tokio-postgres sends it.
fn run(name: &str) -> Vec<u8> {
    [
        msg(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes()),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'S', b""),
    ]
    .concat()
}

fn row(value: &str) -> Vec<u8> {
    [
        msg(b'2', b""),
        msg(
            b'D',
            &[&[0, 1][..], &(value.len() as u32).to_be_bytes(), value.as_bytes()].concat(),
        ),
        msg(b'C', b"SELECT 1\0"),
    ]
    .concat()
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn error(severity: &str, code: &str) -> Vec<u8> {
    msg(
        b'E',
        format!("S{severity}\0V{severity}\0C{code}\0Mboom\0\0").as_bytes(),
    )
}

/// The read-only statement's answer (its `Parse` too when `parsed`).
fn read_only_answer(parsed: bool) -> Vec<u8> {
    let mut out = if parsed { msg(b'1', b"") } else { Vec::new() };
    out.extend(row("on"));
    out
}

/// A gatherer that is on and has seen `s1` and `s2` prepared as reads, `w1` as a write.
fn gatherer() -> Gatherer {
    let gathering = Gathering::new();
    gathering.parsed(b"s1\0SELECT $1::int");
    gathering.parsed(b"s2\0/* a read */ select 2");
    gathering.parsed(b"w1\0INSERT INTO t VALUES (1)");
    gathering.set_on(true);
    Gatherer::new(gathering)
}

fn to_server(g: &mut Gatherer, bytes: &[u8]) -> Vec<u8> {
    g.client_bytes(bytes);
    g.cut();
    let out = g.unsent().to_vec();
    g.sent(out.len());
    out
}

fn to_client(g: &mut Gatherer, bytes: &[u8]) -> Vec<u8> {
    g.server_bytes(bytes);
    let back = g.unread().to_vec();
    g.read(back.len());
    back
}

fn read_only_group(parsed: bool, names: &[&str]) -> Vec<u8> {
    let mut out = if parsed {
        parse(
            "holdfast_gather_read_only",
            std::str::from_utf8(READ_ONLY_SQL).unwrap(),
        )
    } else {
        Vec::new()
    };
    out.extend(msg(b'B', b"\0holdfast_gather_read_only\0\0\0\0\0\0\0"));
    out.extend(msg(b'E', b"\0\0\0\0\0"));
    for name in names {
        let one = run(name);
        out.extend_from_slice(&one[..one.len() - 5]);
    }
    out.extend(msg(b'S', b""));
    out
}

#[test]
fn reads_written_together_go_as_one_read_only_transaction_and_come_back_one_by_one() {
    let mut g = gatherer();
    let sent = to_server(&mut g, &[run("s1"), run("s2")].concat());
    assert_eq!(sent, read_only_group(true, &["s1", "s2"]));

    let answer = [read_only_answer(true), row("1"), row("2"), ready()].concat();
    // Split anywhere, the client gets each request's answer and its own ReadyForQuery.
    for cut in [1, 7, answer.len() / 2, answer.len() - 1] {
        let mut g = gatherer();
        to_server(&mut g, &[run("s1"), run("s2")].concat());
        let mut back = to_client(&mut g, &answer[..cut]);
        back.extend(to_client(&mut g, &answer[cut..]));
        assert_eq!(
            back,
            [row("1"), ready(), row("2"), ready()].concat(),
            "cut at {cut}"
        );
        assert!(g.is_empty());
    }
    // The read-only statement is prepared once per connection.
    let mut g = gatherer();
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    to_client(&mut g, &answer);
    assert_eq!(
        to_server(&mut g, &[run("s2"), run("s1")].concat()),
        read_only_group(false, &["s2", "s1"])
    );
    assert_eq!(g.control.gathered(), 2);
}

#[test]
fn nothing_is_gathered_while_off_nor_a_write_nor_a_lone_read() {
    let mut g = gatherer();
    g.control.set_on(false);
    let plain = [run("s1"), run("s2")].concat();
    assert_eq!(to_server(&mut g, &plain), plain);

    let mut g = gatherer();
    let write_between = [
        run("s1"),
        run("w1"),
        run("s2"),
        parse("s3", "SELECT 3"),
        msg(b'S', b""),
    ]
    .concat();
    assert_eq!(to_server(&mut g, &write_between), write_between);
    let answers = [
        row("1"),
        ready(),
        row("w"),
        ready(),
        row("2"),
        ready(),
        msg(b'1', b""),
        ready(),
    ]
    .concat();
    assert_eq!(to_client(&mut g, &answers), answers);
    assert!(g.is_empty());
}

#[test]
fn a_failed_group_answers_every_request_with_the_regather_error_and_leaves_out_the_culprit() {
    let mut g = gatherer();
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    // s2 fails (say it wrote): the server skips the rest and rolls the group back.
    let answer = [
        read_only_answer(true),
        row("1"),
        msg(b'2', b""),
        error("ERROR", "25006"),
        ready(),
    ]
    .concat();
    let back = to_client(&mut g, &answer);
    let regather = msg(
        b'E',
        format!("SERROR\0VERROR\0C{REGATHER_SQLSTATE}\0M{REGATHER_MESSAGE}\0\0").as_bytes(),
    );
    assert_eq!(back, [regather.clone(), ready(), regather, ready()].concat());
    assert_eq!(g.control.groups_failed(), 1);
    assert_eq!(g.control.gathered(), 0);
    // s2 now goes on its own; s1 is still gathered.
    let sent = to_server(&mut g, &[run("s1"), run("s2"), run("s1"), run("s1")].concat());
    assert_eq!(
        sent,
        [run("s1"), run("s2"), read_only_group(false, &["s1", "s1"])].concat()
    );
}

#[test]
fn a_lost_read_only_statement_is_prepared_again() {
    let mut g = gatherer();
    g.prepared = true;
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    to_client(&mut g, &[error("ERROR", "26000"), ready()].concat());
    assert_eq!(
        to_server(&mut g, &[run("s1"), run("s2")].concat()),
        read_only_group(true, &["s1", "s2"])
    );
}

#[test]
fn an_error_that_ends_the_session_passes_at_once() {
    let mut g = gatherer();
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    let fatal = error("FATAL", "57P01");
    let back = to_client(
        &mut g,
        &[read_only_answer(true), row("1"), fatal.clone()].concat(),
    );
    assert_eq!(back, fatal);
}

#[test]
fn notices_pass_at_once_and_what_is_not_followed_is_relayed() {
    let mut g = gatherer();
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    let notice = msg(b'N', b"SNOTICE\0Mhello\0\0");
    assert_eq!(
        to_client(&mut g, &[read_only_answer(true), notice.clone()].concat()),
        notice
    );

    // A Flush is not followed: from there on, bytes go through as they are.
    let mut g = gatherer();
    let odd = [run("s1"), msg(b'H', b""), run("s1"), run("s2")].concat();
    assert_eq!(to_server(&mut g, &odd), odd);
    let answers = [row("1"), ready(), msg(b'2', b"")].concat();
    assert_eq!(to_client(&mut g, &answers), answers);
}

#[test]
fn groups_are_cut_for_four_in_flight() {
    let mut g = gatherer();
    let sixteen: Vec<u8> = (0..16).flat_map(|_| run("s1")).collect();
    let sent = to_server(&mut g, &sixteen);
    let group: Vec<u8> = read_only_group(true, &["s1"; 4])
        .into_iter()
        .chain((0..3).flat_map(|_| read_only_group(false, &["s1"; 4])))
        .collect();
    assert_eq!(sent, group, "sixteen requests, four groups of four");
}

#[test]
fn answers_owed_from_before_the_gatherer_pass_unchanged() {
    let mut g = gatherer();
    g.owe(2);
    to_server(&mut g, &[run("s1"), run("s2")].concat());
    let earlier = [row("a"), ready(), row("b"), ready()].concat();
    let back = to_client(
        &mut g,
        &[
            earlier.clone(),
            read_only_answer(true),
            row("1"),
            row("2"),
            ready(),
        ]
        .concat(),
    );
    assert_eq!(back, [earlier, row("1"), ready(), row("2"), ready()].concat());
    assert!(g.is_empty());
}
