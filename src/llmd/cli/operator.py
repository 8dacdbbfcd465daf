"""`llmd operator`: run the LLMInferenceService operator; `llmd operator manifests`: install it."""

from __future__ import annotations

import socket
from typing import Annotated, Any

import typer

from llmd._kube import KubeApi
from llmd.cli._app import app, run_service
from llmd.deploy import dump_yaml

operator_app = typer.Typer(help="Reconcile LLMInferenceService resources (kopf).",
                           invoke_without_command=True, no_args_is_help=False)
app.add_typer(operator_app, name="operator")


@operator_app.callback()
def operator(
    ctx: typer.Context,
    namespace: Annotated[list[str] | None, typer.Option(
        help="reconcile only this namespace (repeatable)")] = None,
    all_namespaces: Annotated[bool, typer.Option(help="reconcile the whole cluster")] = False,
    resync_seconds: Annotated[float, typer.Option(
        help="re-apply every service this often (drift repair)")] = 60.0,
    lease: Annotated[bool, typer.Option(help="leader election over a Lease")] = True,
    lease_namespace: Annotated[str | None, typer.Option(
        envvar="POD_NAMESPACE", help="namespace of the Lease (default: the pod's)")] = None,
    identity: Annotated[str | None, typer.Option(
        envvar="POD_NAME", help="this replica's name in the Lease (default: hostname)")] = None,
    kube_api_server: Annotated[str | None, typer.Option(
        help="Kubernetes API URL without auth, e.g. kubectl proxy's "
             "(default: the pod's service account)")] = None,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Run the operator (a subcommand, e.g. `manifests`, does something else)."""
    if ctx.invoked_subcommand is not None:
        return
    from llmd.operator import LeaseConfig, Operator, OperatorConfig

    if bool(namespace) == all_namespaces:
        raise typer.BadParameter("give --namespace NS (repeatable) or --all-namespaces")
    api = KubeApi(kube_api_server) if kube_api_server else None
    election = None
    if lease:
        election = LeaseConfig(namespace=lease_namespace or (namespace or ["default"])[0],
                               identity=identity or socket.gethostname())

    async def main(stop: Any) -> None:
        config = OperatorConfig(api or KubeApi.in_cluster(), tuple(namespace or ()),
                                resync_seconds, election)
        await Operator(config).run(stop)

    run_service(main, log_level=log_level)


@operator_app.command()
def manifests(
    namespace: Annotated[str, typer.Option(help="where the operator runs")] = "llmd-system",
    image: Annotated[str | None, typer.Option(help="operator image")] = None,
    watch_namespace: Annotated[list[str] | None, typer.Option(
        help="reconcile only this namespace (repeatable; default: the whole cluster)")] = None,
) -> None:
    """Print the CRD, ServiceAccount, RBAC and Deployment that install the operator."""
    from llmd.deploy import crd
    from llmd.operator.manifests import DEFAULT_IMAGE, install_manifests

    objects = install_manifests(crd(), namespace=namespace, image=image or DEFAULT_IMAGE,
                                watch=tuple(watch_namespace or ()))
    typer.echo(dump_yaml(objects), nl=False)

