"""Publish a session to the gallery with tags; prints the gallery item's id and messages."""

from common import call, parser

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("session_id")
    p.add_argument("--tags", default="", help="comma-separated tags")
    args = p.parse_args()
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    body = {
        "user_id": args.user_id,
        "session": {"user_id": args.user_id, "session_id": args.session_id},
        "tags": tags,
    }
    item = call(args.url, "/api/sessions/publish", body)["data"]
    print(f"published: gallery_id {item['id']}  tags: {', '.join(item['tags']) or '-'}")
    for msg in item["messages"]:
        print(f"[{msg['role']}] {msg['content']}")
