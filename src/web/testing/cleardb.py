"""Delete a session and its messages (published gallery copies stay); prints the sessions left."""

from common import call, parser

if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("session_id")
    args = p.parse_args()
    result = call(args.url, "/api/cleardb", {"user_id": args.user_id, "session_id": args.session_id})
    print(result["message"])
    for s in result["data"]["sessions"]:
        print(s["session_id"])
