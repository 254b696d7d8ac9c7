from django.core.management.base import BaseCommand, CommandError

from apps.accounts.roles import Role
from apps.accounts.services import account_token, account_upsert


class Command(BaseCommand):
    help = (
        "Create or update an account with its roles and queues. With --token, print its "
        "API token alone on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--role", action="append", required=True, choices=Role.values, dest="roles"
        )
        parser.add_argument("--queue", action="append", default=[], dest="queues")
        parser.add_argument("--password")
        parser.add_argument("--token", action="store_true")

    def handle(self, *args, username, roles, queues, password, token, **options):
        try:
            user = account_upsert(username=username, roles=roles, queues=queues, password=password)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        where = ", ".join(queues) if queues else "every queue"
        self.stdout.write(f"account {user.username}: roles {', '.join(roles)}; queues: {where}")
        if token:
            self.stdout.write(account_token(user=user))
