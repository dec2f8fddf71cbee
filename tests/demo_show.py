"""Pretty-prints the Vultr simulator's state or journal for `make demo`.

Usage: demo_show.py state|journal < JSON
"""
import json
import sys


def show_state(s):
    policies = {p["id"]: p["name"] for p in s["policies"]}
    users = {u["id"]: u["email"] for u in s["users"]}
    groups = {g["id"]: g["display_name"] for g in s["groups"]}
    roles = {r["id"]: r["name"] for r in s.get("roles", [])}
    for a in s["user_attachments"]:
        print("  policy %-14s -> user  %s" % (policies[a["policy_id"]], users[a["target_id"]]))
    for a in s["group_attachments"]:
        print("  policy %-14s -> group %s" % (policies[a["policy_id"]], groups[a["target_id"]]))
    for a in s.get("role_attachments", []):
        print("  policy %-14s -> role  %s" % (policies[a["policy_id"]], roles[a["target_id"]]))


def show_journal(entries):
    for e in entries:
        if e["method"] in ("POST", "DELETE"):
            print("  %-6s %s -> %s" % (e["method"], e["path"], e["status"]))


if __name__ == "__main__":
    data = json.load(sys.stdin)
    {"state": show_state, "journal": show_journal}[sys.argv[1]](data)
