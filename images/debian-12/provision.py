#!/usr/bin/python3 -IS
# vmctl-provision: apply the per-VM settings vmctl hands the guest, on every boot.
#
# Installed by build.sh as /usr/local/lib/vmctl/provision and run by
# vmctl-provision.service (oneshot, before ssh.service and the app units). The
# settings come as the systemd credential "vmctl.provision" (the unit has
# LoadCredential=vmctl.provision, so systemd copies it from the system
# credentials it imported from fw_cfg opt/io.systemd.credentials/ or SMBIOS
# type 11) and are read from $CREDENTIALS_DIRECTORY/vmctl.provision:
#
#   {"hostname": "web", "user": "alice", "authorized_keys": ["ssh-ed25519 AAAA... c"],
#    "ssh_host_key": {"type": "ed25519", "private": "-----BEGIN OPENSSH...", "public": "ssh-ed25519 AAAA..."},
#    "app": "gunicorn-hello" | "nginx-gunicorn" | null,
#    "wsgi_app": "none" | "nginx" (your own app, and its proxy),
#    "app_env": {"UPSTREAM": "http://db:8080/"},
#    "networks": [{"mac": "52:54:00:ab:cd:ef", "address": "10.89.0.2/24"}],
#    "hosts": [{"address": "10.89.0.3", "names": ["db", "db.backend"]}]}
#
# Every field is optional. Each boot it makes the system match the credential:
#   hostname         transient hostname + /etc/hostname
#   user             created if missing (home, /bin/bash, locked password, group
#                    sudo); /etc/sudoers.d/vmctl gives it NOPASSWD sudo
#   authorized_keys  ~user/.ssh/authorized_keys, replaced (0700/0600, user-owned)
#   ssh_host_key     /etc/ssh/ssh_host_ed25519_key(.pub) (0600/0644)
#   app              the app's units enabled and started, the other app's
#                    units disabled and stopped; null/absent: no app
#   wsgi_app         your own app: vmctl-app.service (+ nginx) enabled and
#                    started (it installs the release first: app-install)
#   app_env          /etc/vmctl/app.env (the app units' EnvironmentFile=),
#                    removed when absent
#   networks         the NICs on private networks, matched by MAC: a
#                    systemd-networkd file each in /run/systemd/network with
#                    the static address and no gateway (written before
#                    networkd starts: this unit runs before it)
#   hosts            the other VMs of those networks, in a block of
#                    /etc/hosts of their own (lines ending "# vmctl-network")
#   mounts           shared folders: [{"tag": "vmctl0", "path": "/srv/code",
#                    "ro": false}], each mounted (virtiofs) at its path
#   scripts          your provisioning: [{"mode": "system"|"user", "script":
#                    "..."}], written with the user to /run/vmctl/scripts.json
#                    for vmctl-scripts.service (after this unit and the
#                    network, before the apps), which runs each script once
# Without a credential (e.g. a plain `qemu -hda disk.qcow2` boot) it only
# makes sure an ed25519 host key exists (generating one takes ~0.1 s; sshd is
# configured for that key only) and leaves users and apps as they are on the
# disk. A credential without ssh_host_key also gets such a generated key.
# /etc/hosts always maps 127.0.1.1 to the current hostname (sudo looks it up).
#
# Files are rewritten only when their content or mode differs, and systemctl
# runs only when an app's state has to change, so a boot with an unchanged
# credential costs one Python start. Progress goes to the journal and the
# console as "vmctl-provision: ..." lines, ending with "vmctl-provision: done".

import grp
import json
import os
import pwd
import re
import socket
import sys

CREDENTIAL = "vmctl.provision"
SSH_DIR = "/etc/ssh"
HOST_KEY = SSH_DIR + "/ssh_host_ed25519_key"
SUDOERS = "/etc/sudoers.d/vmctl"
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"
UNIT_DIRS = ["/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"]
APPS = {
    "gunicorn-hello": ["vmctl-app-gunicorn-hello.service"],
    "nginx-gunicorn": ["vmctl-app-nginx-gunicorn.service", "nginx.service"],
    # Your own app (installed by vmctl-app-install.service, which vmctl-app.service needs).
    "wsgi": ["vmctl-app.service"],
    "wsgi-nginx": ["vmctl-app.service", "nginx.service"],
}
APP_UNITS = sorted({u for units in APPS.values() for u in units})
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOST_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")

APP_ENV = "/etc/vmctl/app.env"
NETWORK_DIR = "/run/systemd/network"
HOSTS_MARK = "# vmctl-network"
ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
ADDR_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

problems = 0


def log(msg):
    print("vmctl-provision: " + msg, flush=True)


def error(msg):
    global problems
    problems += 1
    log("error: " + msg)


def write_file(path, data, mode, uid=0, gid=0, dir_fd=None):
    """Atomically replace path (relative to dir_fd if given) unless it already
    holds data with this mode and owner. Never follows a symlink at path.
    Returns True if it wrote."""
    if isinstance(data, str):
        data = data.encode()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            same = (st.st_mode & 0o7777 == mode and st.st_uid == uid and st.st_gid == gid
                    and st.st_size == len(data) and os.read(fd, len(data) + 1) == data)
        finally:
            os.close(fd)
        if same:
            return False
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a symlink or unreadable: replace it
    tmp = ".%s.vmctl-tmp" % os.path.basename(path)
    if dir_fd is None:
        tmp = os.path.join(os.path.dirname(path), tmp)
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return True


def run(*argv):
    import subprocess  # only when needed: most boots change nothing

    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        error("%s failed (exit %d): %s" % (" ".join(argv), r.returncode, r.stdout.strip()))
    return r.returncode == 0


def read_credential():
    """The credential's JSON object, or None if there is none (or it is unusable)."""
    d = os.environ.get("CREDENTIALS_DIRECTORY")
    raw = b""
    if d:
        try:
            with open(os.path.join(d, CREDENTIAL), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            pass
    if not raw.strip():
        log("no %s credential: only making sure there is an SSH host key" % CREDENTIAL)
        return None
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        error("credential %s is not valid JSON: %s" % (CREDENTIAL, e))
        return None
    if not isinstance(cfg, dict):
        error("credential %s is not a JSON object" % CREDENTIAL)
        return None
    return cfg


def set_hostname(name):
    if name is None:
        return
    if not isinstance(name, str) or not HOST_RE.match(name) or len(name) > 64:
        error("invalid hostname %r; keeping %s" % (name, socket.gethostname()))
        return
    if write_file("/etc/hostname", name + "\n", 0o644):
        log("hostname %s written to /etc/hostname" % name)
    if socket.gethostname() != name:
        socket.sethostname(name)
        log("hostname set to %s" % name)


def fix_hosts(hosts=None):
    """Map 127.0.1.1 to the current hostname (Debian's convention), and the
    other VMs of the guest's private networks to their addresses."""
    name = socket.gethostname()
    try:
        with open("/etc/hosts") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = ["127.0.0.1\tlocalhost"]
    want = "127.0.1.1\t" + name
    out = [l for l in lines if not l.split("#", 1)[0].split()[:1] == ["127.0.1.1"]
           and not l.endswith(HOSTS_MARK)]
    out.insert(1 if out else 0, want)
    for h in hosts or []:
        addr, names = h.get("address") if isinstance(h, dict) else None, h.get("names") if isinstance(h, dict) else None
        if (not isinstance(addr, str) or not IP_RE.match(addr) or not isinstance(names, list)
                or not all(isinstance(n, str) and HOST_RE.match(n) for n in names)):
            error("invalid hosts entry %r; skipped" % (h,))
            continue
        out.append("%s\t%s %s" % (addr, " ".join(names), HOSTS_MARK))
    write_file("/etc/hosts", "\n".join(out) + "\n", 0o644)


def nic_by_mac(mac, wait=10.0):
    """The name of the interface with this MAC, waiting (bounded) for its driver."""
    import time

    deadline = time.monotonic() + wait
    while True:
        for dev in os.listdir("/sys/class/net"):
            try:
                with open("/sys/class/net/%s/address" % dev) as f:
                    if f.read().strip() == mac:
                        return dev
            except OSError:
                pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def set_networks(nics):
    """A networkd file per private NIC (in /run: gone at the next boot), and the address set
    now: networkd gets to a NIC only once udev has, late in a TCG boot, and until then the
    guest would send what is meant for the private subnet out through its default route."""
    os.makedirs(NETWORK_DIR, exist_ok=True)
    for old in os.listdir(NETWORK_DIR):
        if old.startswith("20-vmctl-lan"):
            os.unlink(os.path.join(NETWORK_DIR, old))
    for i, n in enumerate(nics or [], start=1):
        mac, addr = (n.get("mac"), n.get("address")) if isinstance(n, dict) else (None, None)
        if not isinstance(mac, str) or not MAC_RE.match(mac) or not isinstance(addr, str) or not ADDR_RE.match(addr):
            error("invalid network entry %r; skipped" % (n,))
            continue
        write_file(os.path.join(NETWORK_DIR, "20-vmctl-lan%d.network" % i),
                   "# Written by vmctl-provision: a private network of this VM.\n"
                   "[Match]\nMACAddress=%s\n\n[Network]\nAddress=%s\n"
                   "LinkLocalAddressing=no\nIPv6AcceptRA=no\n" % (mac, addr), 0o644)
        dev = nic_by_mac(mac)
        if dev is None:
            error("no NIC with MAC %s; its address is left to networkd" % mac)
            continue
        if run("ip", "address", "replace", addr, "dev", dev) and run("ip", "link", "set", dev, "up"):
            log("private network NIC %s (%s): %s" % (dev, mac, addr))


TAG_RE = re.compile(r"^vmctl[0-9]{1,2}$")


def mount_shares(mounts):
    """Mount each shared folder (virtiofs) where the definition says."""
    try:
        with open("/proc/self/mounts") as f:
            mounted = {line.split()[1] for line in f}
    except OSError:
        mounted = set()
    for m in mounts or []:
        tag, path, ro = (m.get("tag"), m.get("path"), m.get("ro")) if isinstance(m, dict) else (None, None, None)
        if (not isinstance(tag, str) or not TAG_RE.match(tag) or not isinstance(path, str)
                or not path.startswith("/") or "/../" in path + "/" or "," in path):
            error("invalid mounts entry %r; skipped" % (m,))
            continue
        if path in mounted:
            continue
        os.makedirs(path, exist_ok=True)
        if run("mount", "-t", "virtiofs", "-o", "ro" if ro else "rw", tag, path):
            log("shared folder %s mounted at %s%s" % (tag, path, " (read-only)" if ro else ""))


SCRIPTS_JSON = "/run/vmctl/scripts.json"


def set_scripts(scripts, user):
    """Hand the definition's provisioning scripts to vmctl-scripts.service."""
    if not scripts:
        return  # /run is empty at boot: the service's condition fails
    ok = isinstance(scripts, list) and all(
        isinstance(s, dict) and s.get("mode") in ("system", "user")
        and isinstance(s.get("script"), str) for s in scripts)
    if not ok:
        error("invalid scripts; none will run")
        return
    os.makedirs(os.path.dirname(SCRIPTS_JSON), mode=0o755, exist_ok=True)
    write_file(SCRIPTS_JSON, json.dumps({"user": user, "scripts": scripts}), 0o600)
    log("%d provisioning script(s) for vmctl-scripts.service" % len(scripts))


def set_app_env(env):
    """The app units' environment, or none."""
    if not env:
        try:
            os.unlink(APP_ENV)
            log("app environment removed")
        except FileNotFoundError:
            pass
        return
    if not isinstance(env, dict):
        error("app_env must be an object")
        return
    lines = ["# Written by vmctl-provision: the app's environment (app_env)."]
    for k, v in sorted(env.items()):
        if not ENV_RE.match(k) or not isinstance(v, str) or any(ord(c) < 32 for c in v):
            error("invalid app_env entry %r; skipped" % (k,))
            continue
        lines.append('%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"')))
    os.makedirs(os.path.dirname(APP_ENV), exist_ok=True)
    if write_file(APP_ENV, "\n".join(lines) + "\n", 0o644):
        log("app environment: %s" % ", ".join(sorted(env)))


def ensure_user(name):
    """Create the login user if missing; return its pwd entry (or None)."""
    if not isinstance(name, str) or not USER_RE.match(name) or name == "root":
        error("invalid user name %r; no login user set up" % (name,))
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if not run("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo",
                   "--comment", "vmctl login user", name):
            return None
        pw = pwd.getpwnam(name)
        log("created user %s (uid %d, password locked)" % (name, pw.pw_uid))
    if pw.pw_uid < 1000:
        error("%s is a system account (uid %d); not using it as the login user" % (name, pw.pw_uid))
        return None
    if name not in grp.getgrnam("sudo").gr_mem:
        run("usermod", "--append", "--groups", "sudo", name)
    if write_file(SUDOERS, "# Written by vmctl-provision on every boot.\n"
                  "%s ALL=(ALL:ALL) NOPASSWD: ALL\n" % name, 0o440):
        log("sudo without password for %s" % name)
    return pw


def write_authorized_keys(pw, keys):
    if keys is None:
        return
    if isinstance(keys, str):
        keys = keys.splitlines()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        error("authorized_keys must be a list of strings")
        return
    keys = [k.strip() for k in keys if k.strip() and "\n" not in k.strip()]
    # The user owns ~/.ssh: open it without following symlinks and write
    # relative to that directory, so a planted link cannot redirect root.
    home = os.open(pw.pw_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            os.mkdir(".ssh", 0o700, dir_fd=home)
        except FileExistsError:
            pass
        d = os.open(".ssh", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=home)
        try:
            os.fchown(d, pw.pw_uid, pw.pw_gid)
            os.fchmod(d, 0o700)
            data = "".join(k + "\n" for k in keys)
            if write_file("authorized_keys", data, 0o600, pw.pw_uid, pw.pw_gid, dir_fd=d):
                log("%d authorized key(s) for %s" % (len(keys), pw.pw_name))
        finally:
            os.close(d)
    finally:
        os.close(home)


def install_host_key(key):
    if key is not None:
        if not isinstance(key, dict):
            error("ssh_host_key must be an object")
        elif key.get("type", "ed25519") != "ed25519":
            error("ssh_host_key type %r is not supported (only ed25519)" % key.get("type"))
        else:
            private, public = key.get("private"), key.get("public")
            if (isinstance(private, str) and "BEGIN OPENSSH PRIVATE KEY" in private
                    and isinstance(public, str) and public.strip().startswith("ssh-ed25519 ")):
                changed = write_file(HOST_KEY, private.strip() + "\n", 0o600)
                changed |= write_file(HOST_KEY + ".pub", public.strip() + "\n", 0o644)
                if changed:
                    log("installed the given ed25519 SSH host key")
                return
            error("ssh_host_key needs an OpenSSH ed25519 private key and its public key")
    if not os.path.exists(HOST_KEY):
        for f in (HOST_KEY, HOST_KEY + ".pub"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        if run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@" + socket.gethostname(),
               "-f", HOST_KEY):
            log("generated an ed25519 SSH host key")


# The app units (and nginx.service) are only WantedBy=multi-user.target, so
# enabling one is exactly this symlink, which is what `systemctl enable`
# would make (without loading every unit file: ~0.3 s under TCG).
def enabled(unit):
    return os.path.lexists(os.path.join(WANTS_DIR, unit))


def enable(unit):
    for d in UNIT_DIRS:
        path = os.path.join(d, unit)
        if os.path.isfile(path):
            os.makedirs(WANTS_DIR, exist_ok=True)
            os.symlink(path, os.path.join(WANTS_DIR, unit))
            return True
    error("unit %s not found" % unit)
    return False


def set_app(app):
    if app is not None and app not in APPS:
        error("unknown app %r (known: %s); apps left as they are" % (app, ", ".join(APPS)))
        return
    want = APPS.get(app, [])
    drop = [u for u in APP_UNITS if u not in want and enabled(u)]
    if drop:
        for u in drop:
            os.unlink(os.path.join(WANTS_DIR, u))
        run("systemctl", "stop", "--no-block", *drop)
        log("disabled and stopped " + " ".join(drop))
    add = [u for u in want if not enabled(u) and enable(u)]
    if add:
        # This boot's transaction did not include them: start them now.
        run("systemctl", "start", "--no-block", *add)
        log("enabled and started " + " ".join(add))
    log("app: %s" % (app or "none"))


def main():
    os.umask(0o022)
    cfg = read_credential()
    given = cfg is not None
    cfg = cfg or {}
    steps = [
        ("hostname", lambda: set_hostname(cfg.get("hostname"))),
        ("/etc/hosts", lambda: fix_hosts(cfg.get("hosts"))),
        ("networks", lambda: set_networks(cfg.get("networks"))),
        ("shared folders", lambda: mount_shares(cfg.get("mounts"))),
        ("ssh host key", lambda: install_host_key(cfg.get("ssh_host_key"))),
    ]
    # No credential (a plain `qemu -hda` boot): leave the apps as the disk has
    # them. With one, "app" absent or null means no app.
    if given:
        steps.append(("scripts", lambda: set_scripts(cfg.get("scripts"), cfg.get("user"))))
        steps.append(("app environment", lambda: set_app_env(cfg.get("app_env"))))
        app = cfg.get("app")
        if app is None and cfg.get("wsgi_app") in ("none", "nginx"):
            app = "wsgi" if cfg["wsgi_app"] == "none" else "wsgi-nginx"
        steps.append(("app", lambda: set_app(app)))
    if cfg.get("user") is not None:
        def user_step():
            pw = ensure_user(cfg.get("user"))
            if pw is not None:
                write_authorized_keys(pw, cfg.get("authorized_keys"))
        steps.insert(2, ("user", user_step))
    elif cfg.get("authorized_keys"):
        error("authorized_keys given without a user; ignored")
    for what, step in steps:
        try:
            step()
        except Exception as e:  # one failed step must not stop the others
            error("%s: %s: %s" % (what, type(e).__name__, e))
    log("done" if not problems else "done with %d error(s)" % problems)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
