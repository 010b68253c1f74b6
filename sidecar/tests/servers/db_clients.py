"""Database clients for the sidecar's integration tests: `db_clients.py SCENARIO PORT [DIR]`.

Each scenario waits a second first, so that the sidecar's discovery (a /proc scan every 250 ms)
selects this process before it connects, then makes a known set of calls and exits 0.

pg-params      psycopg: server-side parameters, a prepared statement, pipeline mode, an error
pg-hold        psycopg: connects, writes DIR/ready, waits for DIR/go, then runs one query
pg-server-side psycopg: connects, writes DIR/ready (its backend's pid), waits for DIR/go (the
               test's sign that a server-side sidecar instruments the backend), runs one query
               carrying a traceparent in a comment
pg-tls         psycopg over TLS (sslmode=require): writes DIR/started (its pid), waits for
               DIR/connect, connects, writes DIR/ready (its backend's pid), waits for DIR/go, then
               runs three queries
pymysql        PyMySQL (text protocol): queries, an error, select_db
connector      mysql-connector-python, cursor(prepared=True): two executions and an error
redis-py       redis-py: a MULTI/EXEC pipeline, SELECT 2, an error
"""

import os
import sys
import time


def pg(port, sslmode="disable"):
    import psycopg
    return psycopg.connect(f"host=127.0.0.1 port={port} user=test dbname=shop sslmode={sslmode}",
                           autocommit=True)


def wait_for(directory, name):
    while not os.path.exists(os.path.join(directory, name)):
        time.sleep(0.02)


def announce(directory, name, text):
    # Written whole, then renamed: the reader never sees a partial file.
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def pg_params(port):
    import psycopg
    with pg(port) as conn:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text)")
        cur.execute("INSERT INTO items VALUES (%s, %s) ON CONFLICT DO NOTHING", (1, "secret-name"))
        cur.execute("SELECT name FROM items WHERE id = %s", (1,), prepare=True)
        cur.execute("SELECT name FROM items WHERE id = %s", (2,), prepare=True)
        with conn.pipeline():
            for i in range(3):
                cur.execute("UPDATE items SET name = %s WHERE id = %s", (f"n{i}", 1))
        try:
            cur.execute("SELECT nope FROM items WHERE id = %s", (1,))
        except psycopg.Error:
            pass


def pg_hold(port, directory):
    with pg(port) as conn:
        open(os.path.join(directory, "ready"), "w").close()
        while not os.path.exists(os.path.join(directory, "go")):
            time.sleep(0.05)
        conn.execute("SELECT 42 AS held")


def pg_tls(port, directory):
    import psycopg  # loads its libssl: the sidecar can hook it before the connection
    announce(directory, "started", str(os.getpid()))
    wait_for(directory, "connect")
    with pg(port, "require") as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        announce(directory, "ready", str(backend))
        wait_for(directory, "go")
        for i in range(3):
            conn.execute(f"SELECT {i} AS tls")


def pg_server_side(port, directory):
    with pg(port) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        announce(directory, "ready", str(backend))
        wait_for(directory, "go")
        # The context a client carries in a comment (as sqlcommenter does).
        conn.execute("SELECT 7 AS server_side "
                     "/*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/")


def pymysql_text(port):
    import pymysql
    conn = pymysql.connect(host="127.0.0.1", port=port, user="test", password="test", database="shop")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS kv (k varchar(10) PRIMARY KEY, v int)")
        cur.execute("REPLACE INTO kv VALUES (%s, %s)", ("a", 1))
        cur.execute("SELECT v FROM kv WHERE k = %s", ("a",))
        try:
            cur.execute("SELECT * FROM missing_table")
        except pymysql.MySQLError:
            pass
    conn.select_db("other")
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
    conn.close()


def connector(port):
    import mysql.connector
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user="test", password="test",
                                   database="shop", ssl_disabled=True, use_pure=True)
    cur = conn.cursor(prepared=True)
    for key in ("a", "b"):
        cur.execute("SELECT v FROM kv WHERE k = %s", (key,))
        cur.fetchall()
    try:
        cur.execute("SELECT nope FROM kv WHERE k = %s", ("a",))
    except mysql.connector.Error:
        pass
    cur.close()
    conn.close()


def redis_py(port):
    import redis
    client = redis.Redis(port=port)
    with client.pipeline(transaction=True) as pipe:
        pipe.set("a", 1).incr("a").execute()
    client.execute_command("SELECT", 2)
    client.set("s", "x")
    try:
        client.lpush("s", "y")
    except redis.ResponseError:
        pass
    client.close()


if __name__ == "__main__":
    time.sleep(1)
    scenario, port = sys.argv[1], int(sys.argv[2])
    {
        "pg-params": lambda: pg_params(port),
        "pg-hold": lambda: pg_hold(port, sys.argv[3]),
        "pg-server-side": lambda: pg_server_side(port, sys.argv[3]),
        "pg-tls": lambda: pg_tls(port, sys.argv[3]),
        "pymysql": lambda: pymysql_text(port),
        "connector": lambda: connector(port),
        "redis-py": lambda: redis_py(port),
    }[scenario]()
