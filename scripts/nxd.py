"""The project's launcher for nx-27017 (the local MongoDB wire server on SQLite), with transaction guards.

    python scripts/nxd.py --data-dir D --port P --pid-file F --log-file L

It runs nx-27017's own asyncio server in this process and wraps four methods of its `NeoSQLiteHandler`
instance (no fork, no file of nx changed). nx keeps ONE SQLite connection per database for every client, and
its sessions live in `handler._sessions[(lsid, db)]` (neosqlite `ClientSession`: `BEGIN IMMEDIATE`, or a
`SAVEPOINT` when the connection is already inside a transaction). Plain nx never ends a transaction whose
client died, so its writes stay visible to everyone, later transactions nest inside it (their "commit" only
releases a savepoint) and all of it is lost when nx stops. The guards:

1. Abort on disconnect. Every command records which connection (`msg["_conn_id"]`, set by nx's
   `handle_client`) last carried each lsid. nx calls `handler.close_streams_for_connection(conn_id)` in the
   `finally` of `handle_client` when a connection ends for any reason (EOF, reset, kill -9 of the client);
   the wrapper then ROLLS BACK every open transaction of the lsids last seen on that connection and forgets
   their sessions. Later commands of an aborted transaction (same lsid + txnNumber) are answered
   `NoSuchTransaction` (251, label TransientTransactionError) instead of running outside any transaction.
2. One transaction at a time per database. A `startTransaction` or a write outside a transaction, from
   another lsid while a transaction is open on that database, waits (condition variable, no lock held) until
   that transaction ends, so nothing nests inside or joins another client's transaction. After
   `--wait-s` seconds it is refused with `WriteConflict` (112, label TransientTransactionError on a
   transaction start) instead of joining. Plain reads are not held back (see libs/README.md).
3. Commit/abort take the data database's lock (nx routes them to `admin` and would run them under the admin
   lock), and a clean stop (SIGTERM/SIGINT) rolls back what is still open before closing the files (neosqlite's
   `close()` would otherwise COMMIT a pending transaction).
4. `serverStatus` gains `transactions.currentOpen` and `nxd` (version pin, counters) so callers can observe it.

The launcher is written for one nx version (`NX_VERSION`, also pinned in requirements-dev.txt) and refuses to
start on another: the wrapped internals are private.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any

NX_DISTRIBUTION = "nx-27017"
NX_VERSION = "0.8.1"

log = logging.getLogger("nxd")

# Commands that never write: they are not held back behind another client's open transaction.
READ_COMMANDS = frozenset({
    "find", "getMore", "count", "distinct", "listCollections", "listcollections", "listIndexes", "listDatabases",
    "listdatabases", "listSearchIndexes", "hello", "Hello", "ismaster", "isMaster", "ping", "buildInfo",
    "buildinfo", "serverStatus", "dbStats", "dbstats", "collStats", "collstats", "killCursors", "endSessions",
    "commitTransaction", "abortTransaction", "whatsmyuri", "getLastError", "connectionStatus", "getParameter",
    "getCmdLineOpts", "hostInfo", "startSession", "explain", "saslStart", "saslContinue", "getFreeMonitoringStatus",
})
WRITE_CONFLICT = 112
NO_SUCH_TRANSACTION = 251
TRANSIENT = "TransientTransactionError"


def installed_nx_version() -> str | None:
    try:
        return metadata.version(NX_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def check_nx_version() -> None:
    found = installed_nx_version()
    if found != NX_VERSION:
        sys.exit(f"nxd: written for {NX_DISTRIBUTION}=={NX_VERSION} but {found or 'no version'} is installed; "
                 f"its transaction guards wrap nx internals and are not safe on another version. "
                 f"Install {NX_DISTRIBUTION}=={NX_VERSION} (requirements-dev.txt) or port scripts/nxd.py.")


def _body(msg: Any) -> dict:
    if isinstance(msg, dict):
        for section_type, doc in msg.get("sections") or ():
            if section_type == "body" and isinstance(doc, dict):
                return doc
        if isinstance(msg.get("query"), dict):
            return msg["query"]
    return {}


def _error(code: int, name: str, message: str, transient: bool) -> dict:
    reply: dict[str, Any] = {"ok": 0, "code": code, "codeName": name, "errmsg": message}
    if transient:
        reply["errorLabels"] = [TRANSIENT]
    return reply


class TransactionGuard:
    """Installs the guards on one `NeoSQLiteHandler` instance (see the module docstring)."""

    def __init__(self, handler, wait_s: float = 10.0) -> None:
        from nx_27017.handler import _msg_db_name
        from nx_27017.wire_protocol import _extract_session_id

        self.handler = handler
        self.wait_s = wait_s
        self._db_name = _msg_db_name
        self._session_id = _extract_session_id
        self._changed = threading.Condition()
        self._lock = threading.Lock()
        self._last_conn: dict[str, Any] = {}           # lsid -> connection that last carried it
        self._txn_number: dict[str, Any] = {}          # lsid -> last txnNumber seen
        self._aborted: OrderedDict[str, Any] = OrderedDict()  # lsid -> txnNumber aborted on disconnect
        self.aborted_on_disconnect = 0
        self.refused_waits = 0
        self._orig_command = handler.handle_command
        self._orig_insert = handler.handle_insert
        self._orig_query = handler.handle_query
        self._orig_close = handler.close_streams_for_connection
        self._orig_status = handler._handle_server_status
        handler.handle_command = lambda msg: self._guarded(self._orig_command, msg)
        handler.handle_insert = lambda msg: self._guarded(self._orig_insert, msg)
        handler.handle_query = self._query
        handler.close_streams_for_connection = self._connection_closed
        handler._handle_server_status = self._server_status

    # -- state -----------------------------------------------------------------------------------
    def _scope(self, db_name: str) -> str:
        return self.handler._session_scope(db_name)

    def _open(self, scope: str | None = None) -> list[tuple[str, str]]:
        """(lsid, scope) of every session with an open transaction (on one database scope, or all)."""
        with self.handler._sessions_lock:
            return [key for key, session in self.handler._sessions.items()
                    if session.in_transaction and (scope is None or key[1] == scope)]

    def _holders(self, scope: str, lsid: str | None) -> list[str]:
        return [sid for sid, _ in self._open(scope) if sid != lsid]

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- commands --------------------------------------------------------------------------------
    def _query(self, msg):
        try:
            return self._orig_query(msg)
        finally:
            self._notify()

    def _guarded(self, original, msg):
        request_id = msg.get("request_id", 0) if isinstance(msg, dict) else 0
        body = _body(msg)
        name = next(iter(body), "") if body else ""
        lsid = self._session_id(body["lsid"]) if isinstance(body.get("lsid"), dict) else None
        db_name = self._db_name(msg)
        txn = body.get("txnNumber")
        in_txn = body.get("autocommit") is False
        starting = bool(body.get("startTransaction"))
        if lsid:
            with self._lock:
                self._last_conn[lsid] = msg.get("_conn_id")
                if txn is not None:
                    self._txn_number[lsid] = txn
                if starting:
                    self._aborted.pop(lsid, None)
                elif in_txn and lsid in self._aborted and self._aborted[lsid] == txn:
                    return request_id, _error(NO_SUCH_TRANSACTION, "NoSuchTransaction",
                                              f"transaction {txn} was aborted: its client connection closed",
                                              transient=True)
        try:
            if name in ("commitTransaction", "abortTransaction"):
                return self._finish(original, msg, lsid)
            scope = self._scope(db_name)
            if in_txn and not starting and lsid:
                session = self.handler._find_session(lsid, db_name)
                if session is None or not session.in_transaction:
                    return request_id, _error(NO_SUCH_TRANSACTION, "NoSuchTransaction",
                                              f"no open transaction {txn} for this session", transient=True)
            writes = name not in READ_COMMANDS or (name == "aggregate" and self._aggregate_writes(body))
            if not (starting or (writes and not in_txn)):
                return original(msg)
            return self._when_alone(original, msg, db_name, scope, lsid, starting)
        finally:
            self._notify()

    @staticmethod
    def _aggregate_writes(body: dict) -> bool:
        return any(isinstance(stage, dict) and ("$out" in stage or "$merge" in stage)
                   for stage in body.get("pipeline") or ())

    def _when_alone(self, original, msg, db_name: str, scope: str, lsid: str | None, starting: bool):
        """Run `msg` once no other lsid has a transaction open on its database (or refuse after wait_s)."""
        deadline = time.monotonic() + self.wait_s
        while True:
            with self.handler._lock_for(db_name):
                if not self._holders(scope, lsid):
                    if starting:  # begin here whatever the first command is (nx begins only in some handlers)
                        self.handler._get_or_create_session(_body(msg), self.handler.get_database(db_name), db_name)
                    return original(msg)
            with self._changed:
                while self._holders(scope, lsid):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.refused_waits += 1
                        what = "a transaction" if starting else "a write outside a transaction"
                        log.warning("nxd: refused %s on %s: another client's transaction stayed open %.0fs",
                                    what, db_name, self.wait_s)
                        return msg.get("request_id", 0), _error(
                            WRITE_CONFLICT, "WriteConflict",
                            f"{what} waited {self.wait_s:.0f}s for another transaction on {db_name!r}",
                            transient=starting)
                    self._changed.wait(remaining)

    def _finish(self, original, msg, lsid: str | None):
        """commit/abortTransaction under the lock of the database the transaction lives on."""
        scopes = sorted({scope for sid, scope in self._open() if sid == lsid}) if lsid else []
        locks = [self.handler._lock_for(scope) for scope in scopes]
        for lock in locks:
            lock.acquire()
        try:
            return original(msg)
        finally:
            for lock in reversed(locks):
                lock.release()

    # -- connections -----------------------------------------------------------------------------
    def _connection_closed(self, conn_id) -> None:
        try:
            self._orig_close(conn_id)
        finally:
            if conn_id is not None:
                self.abort_connection(conn_id)

    def abort_connection(self, conn_id) -> int:
        """Roll back every open transaction of the lsids last carried by `conn_id`; forget their sessions."""
        with self._lock:
            lsids = [sid for sid, conn in self._last_conn.items() if conn == conn_id]
            for sid in lsids:
                del self._last_conn[sid]
        aborted = 0
        for sid in lsids:
            with self.handler._sessions_lock:
                keys = [key for key in self.handler._sessions if key[0] == sid]
            for key in keys:
                with self.handler._lock_for(key[1]):
                    with self.handler._sessions_lock:
                        session = self.handler._sessions.pop(key, None)
                    if session is None:
                        continue
                    if session.in_transaction:
                        try:
                            session.abort_transaction()
                        except Exception:  # the rollback is what matters; log what stopped it
                            log.exception("nxd: rollback of lsid %s on %s failed", sid, key[1])
                        aborted += 1
                        with self._lock:
                            self._aborted[sid] = self._txn_number.get(sid)
                            while len(self._aborted) > 10000:
                                self._aborted.popitem(last=False)
                        log.warning("nxd: rolled back the open transaction of lsid %s on %s: its connection closed",
                                    sid, key[1])
            with self._lock:
                self._txn_number.pop(sid, None)
        self.aborted_on_disconnect += aborted
        self._notify()
        return aborted

    def abort_all(self) -> int:
        """Roll back every open transaction (clean stop)."""
        count = 0
        for sid, scope in self._open():
            with self.handler._lock_for(scope):
                with self.handler._sessions_lock:
                    session = self.handler._sessions.pop((sid, scope), None)
                if session is not None and session.in_transaction:
                    session.abort_transaction()
                    count += 1
        self._notify()
        return count

    # -- observability ---------------------------------------------------------------------------
    def _server_status(self, request_id, db):
        request_id, reply = self._orig_status(request_id, db)
        reply["transactions"] = {"currentOpen": len(self._open())}
        reply["nxd"] = {"nxVersion": NX_VERSION, "abortedOnDisconnect": self.aborted_on_disconnect,
                        "refusedWaits": self.refused_waits, "waitS": self.wait_s}
        return request_id, reply


async def serve(host: str, port: int, handler) -> None:
    from nx_27017.server import handle_client

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # nx runs every command in asyncio.to_thread; commands that wait for another transaction hold a worker,
    # so give the pool room for the transaction owner's next command.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="nxd"))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(lambda r, w: handle_client(r, w, handler), host, port)
    log.info("nxd: listening on %s:%s (nx-27017 %s, abort on disconnect)", host, port, NX_VERSION)
    async with server:
        await stop.wait()
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="one <db>.db SQLite file per database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=27017)
    parser.add_argument("--pid-file", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--wait-s", type=float, default=10.0,
                        help="how long a write or transaction start waits for another transaction on its database")
    parser.add_argument("--check-version", action="store_true", help="only check the nx version pin")
    args = parser.parse_args(argv)
    check_nx_version()
    if args.check_version:
        print(f"{NX_DISTRIBUTION} {NX_VERSION}: ok")
        return 0

    from neosqlite.options import JournalMode
    from nx_27017.daemon import remove_pid_file, write_pid_file
    from nx_27017.handler import NeoSQLiteHandler

    logging.basicConfig(level=logging.INFO, filename=args.log_file,
                        format="%(asctime)s - %(name)s - %(levelname)s - [%(process)d] - %(message)s")
    os.makedirs(args.data_dir, exist_ok=True)
    if not write_pid_file(args.pid_file):
        sys.exit(f"nxd: another nx holds {args.pid_file}")
    try:
        handler = NeoSQLiteHandler(data_dir=os.path.abspath(args.data_dir),
                                   journal_mode=JournalMode.validate("WAL"))
        guard = TransactionGuard(handler, wait_s=args.wait_s)
        try:
            asyncio.run(serve(args.host, args.port, handler))
        finally:
            rolled_back = guard.abort_all()
            handler.close_all()
            log.info("nxd: stopped (%d open transaction(s) rolled back)", rolled_back)
    finally:
        remove_pid_file(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
