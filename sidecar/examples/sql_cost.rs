//! The SQL tokenizer's cost per statement, as the database mapping pays it: operation and table
//! (`summarize`) for every span, and `sanitize` when query text is exported. Run with
//! `cargo run --release -p obi-sidecar --example sql_cost`; prints ns per statement for a mix of
//! statements from the tests' clients (pgbench, psycopg, ORMs' longer selects): the fastest of
//! five runs, as other work on the machine only ever adds time.

use std::hint::black_box;
use std::time::Instant;

use obi_sidecar::protocol::sql::{self, Dialect};

const STATEMENTS: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (12, 1, 4711, -3456, CURRENT_TIMESTAMP);",
    "BEGIN",
    "SELECT u.id, u.name, u.email, o.total FROM users u JOIN orders o ON o.user_id = u.id \
     WHERE u.created_at > '2024-01-01' AND o.status IN ('paid', 'shipped') ORDER BY o.total DESC LIMIT 50",
    "WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '1 hour') \
     SELECT kind, count(*) FROM recent GROUP BY kind",
    "/* app:checkout */ DELETE FROM carts WHERE updated_at < $1",
];
const ROUNDS: u32 = 200_000;

fn per_statement(f: impl Fn(&str)) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                for statement in STATEMENTS {
                    f(black_box(statement));
                }
            }
            start.elapsed().as_nanos() as f64 / f64::from(ROUNDS) / STATEMENTS.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let summarize = per_statement(|s| {
        black_box(sql::summarize(s, Dialect::Postgres, false));
    });
    let sanitize = per_statement(|s| {
        black_box(sql::sanitize(s, Dialect::Postgres));
    });
    let average = STATEMENTS.iter().map(|s| s.len()).sum::<usize>() / STATEMENTS.len();
    println!(
        "{} statements, {average} bytes on average, {ROUNDS} rounds, fastest of 5 runs",
        STATEMENTS.len()
    );
    println!("summarize: {summarize:.0} ns/statement");
    println!("sanitize:  {sanitize:.0} ns/statement");
}
