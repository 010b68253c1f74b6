#!/usr/bin/env python3
"""Records the golden database captures under sidecar/testdata/{postgres,mysql,redis}/.

Starts throwaway servers (scripts/db-server.sh, loopback only), puts a recording proxy on
loopback in front of each, and runs real clients (psql, pgbench, psycopg, mariadb, PyMySQL,
mysql-connector-python, redis-cli, redis-benchmark, redis-py) through it. Each `recv` the proxy
makes is one record: `C` (client to server) or `S`, a 4-byte big-endian length, the bytes; on
loopback a recv returns what one write sent when the proxy keeps up, as the capture sees
syscalls. Of the connections a scenario opens, the one that moved the most bytes (or the last one) is
kept.

Usage (as root): python3 sidecar/scripts/record-db-captures.py [TESTDATA_DIR]
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "db-server.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


class Proxy:
    """Forwards loopback connections to `upstream`, recording each one's chunks."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.connections = []
        self.threads = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            records = []
            lock = threading.Lock()
            self.connections.append(records)
            for src, dst, side in ((client, server, b"C"), (server, client, b"S")):
                t = threading.Thread(target=self.pump, args=(src, dst, side, records, lock))
                t.start()
                self.threads.append(t)

    @staticmethod
    def pump(src, dst, side, records, lock):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with lock:
                records.append((side, data))
            dst.sendall(data)

    def save(self, path, last):
        """Waits for the connections to end, then writes the largest one (or the last one)."""
        for t in self.threads:
            t.join(timeout=10)
        self.listener.close()
        if last:
            best = self.connections[-1]
        else:
            best = max(self.connections, key=lambda r: sum(len(d) for _, d in r))
        with open(path, "wb") as out:
            for side, data in best:
                out.write(side + len(data).to_bytes(4, "big") + data)
        print(f"{path}: {len(best)} records")


def run(argv, **kw):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)


def record(path, upstream, scenario, last=False):
    proxy = Proxy(upstream)
    scenario(proxy.port)
    proxy.save(path, last)


def postgres(out, port):
    env = dict(os.environ, PGPASSWORD="test")
    psql = ["psql", "-h", "127.0.0.1", "-U", "test", "-d", "shop", "-X", "-v", "ON_ERROR_STOP=0"]
    run(psql + ["-p", str(port), "-c", "CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v int)"], env=env)
    run(["pgbench", "-i", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "test", "shop"], env=env,
        stderr=subprocess.DEVNULL)

    def simple(p):
        # The second query fails, as it should: psql's exit status says so.
        subprocess.run(psql + ["-p", str(p), "-c",
                               "INSERT INTO kv VALUES ('a', 1) ON CONFLICT DO NOTHING; "
                               "SELECT * FROM kv WHERE k = 'a'",
                               "-c", "SELECT * FROM missing_table"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def extended(p):
        import psycopg
        with psycopg.connect(f"host=127.0.0.1 port={p} user=test dbname=shop sslmode=disable") as conn:
            cur = conn.cursor()
            cur.execute("SELECT v FROM kv WHERE k = %s", ("a",))
            cur.execute("SELECT v FROM kv WHERE k = %s", ("a",), prepare=True)
            cur.execute("SELECT v FROM kv WHERE k = %s", ("b",), prepare=True)
            with conn.pipeline():
                for i in range(3):
                    cur.execute("UPDATE kv SET v = v + %s WHERE k = %s", (i, "a"))
            try:
                cur.execute("SELECT nope FROM kv WHERE k = %s", ("a",))
            except psycopg.Error:
                conn.rollback()
            with cur.copy("COPY kv (k, v) FROM STDIN") as copy:
                copy.write_row(("c", 3))
            conn.commit()
            with cur.copy("COPY kv TO STDOUT") as copy:
                for _ in copy:
                    pass

    def pgbench(p):
        run(["pgbench", "-h", "127.0.0.1", "-p", str(p), "-U", "test", "-M", "prepared", "-S",
             "-t", "3", "-c", "1", "shop"], env=env, stderr=subprocess.DEVNULL)

    record(f"{out}/simple.cap", port, simple)
    record(f"{out}/extended.cap", port, extended)
    # pgbench's last connection is its client's; the first one sets up.
    record(f"{out}/pgbench-prepared.cap", port, pgbench, last=True)


def mysql(out, port):
    def client(p):
        subprocess.run(["mariadb", "-h", "127.0.0.1", "-P", str(p), "-utest", "-ptest", "--skip-ssl",
                        "shop", "-e",
                        "CREATE TABLE IF NOT EXISTS kv (k varchar(10) PRIMARY KEY, v int); "
                        "REPLACE INTO kv VALUES ('a', 1); SELECT * FROM kv; USE other; "
                        "SELECT DATABASE(); SELECT * FROM missing_table"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pymysql_text(p):
        import pymysql
        conn = pymysql.connect(host="127.0.0.1", port=p, user="test", password="test", database="shop",
                               client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        with conn.cursor() as cur:
            cur.execute("SELECT v FROM kv WHERE k = %s", ("a",))
            cur.fetchall()
            cur.execute("SELECT 1; SELECT 2")
            while cur.nextset():
                pass
            try:
                cur.execute("SELECT nope FROM kv")
            except pymysql.MySQLError:
                pass
        conn.ping()
        conn.select_db("other")
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
        conn.close()

    def connector_prepared(p):
        import mysql.connector
        conn = mysql.connector.connect(host="127.0.0.1", port=p, user="test", password="test",
                                       database="shop", ssl_disabled=True, use_pure=True)
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT v FROM kv WHERE k = %s", ("a",))
        cur.fetchall()
        cur.execute("SELECT v FROM kv WHERE k = %s", ("b",))
        cur.fetchall()
        try:
            cur.execute("SELECT nope FROM kv WHERE k = %s", ("a",))
        except mysql.connector.Error:
            pass
        cur.close()
        conn.close()

    record(f"{out}/mariadb-client.cap", port, client)
    record(f"{out}/pymysql.cap", port, pymysql_text)
    record(f"{out}/connector-prepared.cap", port, connector_prepared)


def redis(out, port):
    def cli(p):
        commands = "SET k v\nGET k\nLPUSH k x\nSELECT 2\nHSET h f 1\nNOSUCH a\nDEL h\n"
        subprocess.run(["redis-cli", "-p", str(p)], input=commands.encode(), check=True,
                       stdout=subprocess.DEVNULL)

    def pipeline(p):
        import redis as r
        client = r.Redis(port=p)
        with client.pipeline(transaction=True) as pipe:
            pipe.set("a", 1).incr("a").get("a").execute()
        with client.pipeline(transaction=False) as pipe:
            for i in range(10):
                pipe.set(f"p{i}", i)
            pipe.execute()
        client.close()

    def resp3(p):
        import redis as r
        client = r.Redis(port=p, protocol=3)
        client.hset("m", mapping={"a": 1, "b": 2})
        client.hgetall("m")
        client.sadd("s", "x", "y")
        client.smembers("s")
        pubsub = client.pubsub()
        pubsub.subscribe("news", "sport")
        publisher = r.Redis(port=port)
        for _ in range(2):
            pubsub.get_message(timeout=1)
        publisher.publish("news", "hello")
        publisher.publish("sport", "goal")
        for _ in range(4):
            pubsub.get_message(timeout=1)
        pubsub.unsubscribe()
        pubsub.get_message(timeout=1)
        pubsub.close()
        client.close()
        publisher.close()

    def benchmark(p):
        run(["redis-benchmark", "-p", str(p), "-P", "16", "-n", "32", "-c", "1", "-t", "set,get", "-q"])

    record(f"{out}/redis-cli.cap", port, cli)
    record(f"{out}/pipeline.cap", port, pipeline)
    record(f"{out}/resp3-pubsub.cap", port, resp3)
    record(f"{out}/benchmark.cap", port, benchmark)


def main():
    testdata = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "testdata")
    tmp = tempfile.mkdtemp(prefix="obi-record-")
    os.chmod(tmp, 0o755)
    servers = []
    try:
        for kind, scenario, name in ((("postgres"), postgres, "postgres"), ("mariadb", mysql, "mysql"),
                                     ("redis", redis, "redis")):
            port = free_port()
            servers.append(subprocess.Popen(["bash", SERVER, kind, f"{tmp}/{kind}", str(port)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            out = os.path.join(testdata, name)
            os.makedirs(out, exist_ok=True)
            scenario(out, port)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
