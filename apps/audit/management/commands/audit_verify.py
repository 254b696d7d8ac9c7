from django.core.management.base import BaseCommand, CommandError

from apps.audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Walk the audit hash chain and name the first event that breaks it."

    def handle(self, *args, **options):
        checked, broken = audit_chain_verify()
        if broken is not None:
            raise CommandError(
                f"audit chain broken at event {broken.event_id} "
                f"(position {broken.position} of the chain): {broken.problem}"
            )
        self.stdout.write(f"audit chain verified: {checked} events")
