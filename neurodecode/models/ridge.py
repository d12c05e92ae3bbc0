"""Closed-form multi-output ridge regression with fast alpha selection.

The classical two-stage baseline (Brain-Diffuser, Takagi & Nishimoto) and the
linear reference every deep decoder is compared with: brain responses → stimulus
embeddings. One eigendecomposition serves every alpha of the grid, so alpha
selection costs little more than a single fit.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg

from ..datasets import check_no_leakage
from ..utils import ProgressBar, check_random_state, fill_doc, logger, verbose
from .hub import HubMixin, resolve_pretrained, write_model_card
from .pretrained import read_pretrained, write_pretrained

try:  # scikit-learn is optional: with it, RidgeDecoder is a full sklearn estimator.
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import RegressorMixin as _RegressorMixin
    from sklearn.utils.validation import check_is_fitted as _check_is_fitted
    from sklearn.utils.validation import validate_data as _validate_data

    _HAS_SKLEARN = True
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    _HAS_SKLEARN = False
    _validate_data = None
    _check_is_fitted = None

    class _Base:  # minimal stand-in: get_params / set_params from the signature
        @classmethod
        def _get_param_names(cls) -> list[str]:
            import inspect

            return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

        def get_params(self, deep: bool = True) -> dict:
            return {k: getattr(self, k) for k in self._get_param_names()}

        def set_params(self, **params: Any) -> Any:
            for k, v in params.items():
                if k not in self._get_param_names():
                    raise ValueError(f"Invalid parameter {k!r} for {type(self).__name__}")
                setattr(self, k, v)
            return self

    class _RegressorMixin:
        def score(self, X: Any, y: Any) -> float:
            y = np.asarray(y, dtype=np.float64)
            pred = self.predict(X)
            ss_res = ((y - pred) ** 2).sum(0)
            ss_tot = ((y - y.mean(0)) ** 2).sum(0)
            return float(np.mean(1 - ss_res / np.where(ss_tot == 0, 1, ss_tot)))


DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(0, 5, 11))
_PRECISIONS = ("auto", "float64", "mixed")
_MIXED_MIN_SAMPLES = 1000   # precision="auto": mixed leave-one-out from this many samples (kernel mode)


# ----------------------------------------------------------------------------------------
# numerical core (float64, one decomposition for all alphas)
# ----------------------------------------------------------------------------------------
def _eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric eigendecomposition (divide and conquer, in place); eigenvalues clipped at 0."""
    lam, vec = linalg.eigh(a, driver="evd", overwrite_a=True, check_finite=False)
    return np.maximum(lam, 0.0), vec


def _eigh_t(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As :func:`_eigh` for a float64 tensor (torch's LAPACK is often faster on CPU)."""
    lam, vec = torch.linalg.eigh(a)
    return lam.clamp_(min=0.0), vec


def _gram(X: torch.Tensor, n_blocks: int = 8) -> torch.Tensor:
    """Symmetric ``X @ X.T`` from lower-triangular row blocks (≈ half the flops of a GEMM).

    torch exposes no ``syrk``; the lower block triangle is computed by GEMMs
    (``(b+1)/2b`` of the full product) and mirrored into the upper one.
    """
    n = X.shape[0]
    if n < 512:
        return X @ X.T
    edges = np.linspace(0, n, n_blocks + 1).astype(int)
    out = torch.empty((n, n), dtype=X.dtype)
    for i in range(n_blocks):
        a, b = edges[i], edges[i + 1]
        blk = X[a:b] @ X[:b].T                       # rows a:b, columns 0:b
        out[a:b, :b] = blk
        out[:a, a:b] = blk[:, :a].T
    return out


class _Decomposition:
    """Centred ridge problem decomposed once; LOO errors and coefficients for any alpha.

    Kernel mode (n_samples <= n_features): ``Xc Xcᵀ = Q diag(lam) Qᵀ``.
    Primal mode (n_samples > n_features): ``Xcᵀ Xc = V diag(lam) Vᵀ`` and ``U = Xc V``.
    The hat matrix of ridge with an unpenalised intercept is
    ``H = 11ᵀ/n + Q diag(lam/(lam+alpha)) Qᵀ`` (kernel) or ``11ᵀ/n + U diag(1/(lam+alpha)) Uᵀ``
    (primal), so every alpha costs one ``(r × r) @ (r × k)`` product. float64 torch
    tensors throughout (zero-copy views of the numpy inputs).

    ``mixed=True`` (kernel mode only): the kernel stays float64 but is eigendecomposed
    and scanned over alphas in float32 (:meth:`loo_mse` then has ~1e-5 relative
    error); :meth:`loo_mse_exact` and :meth:`coef` use float64 Cholesky solves of
    ``K + alpha I`` (float64 eigendecomposition fallback when ``trace(K)/alpha >= 1e10``
    or the factorisation fails), so re-scored alphas and the weights are float64-accurate.
    """

    def __init__(self, Xc: np.ndarray, Yc: np.ndarray, fit_intercept: bool, mixed: bool = False) -> None:
        n, p = Xc.shape
        self.kernel = n <= p
        self.mixed = mixed = mixed and self.kernel
        self.n = n
        self.fit_intercept = fit_intercept
        X = torch.from_numpy(Xc)
        self.Yc = Y = torch.from_numpy(np.ascontiguousarray(Yc))
        self._dual: dict = {}
        if mixed:
            self.K = _gram(X)                          # float64, decomposed lazily in float32
            self.lam = None
        elif self.kernel:
            lam, Q = _eigh_t(_gram(X))
            self.lam, self.Q = lam, Q
            self.QtY = Q.T @ Y                        # (n, k)
            self.Q2 = Q * Q                            # diag(Q w Qᵀ) = Q2 @ w
        else:
            lam, V = _eigh_t(X.T @ X)
            self.lam, self.V = lam, V
            U = X @ V                                  # (n, p), column j has norm² lam_j
            self.U = U
            self.UtY = U.T @ Y                         # (p, k)
            self.U2 = U * U

    def _eigh32(self) -> None:
        scale = float(self.K.diagonal().mean()) or 1.0   # O(1) entries for float32 LAPACK
        lam, Q = _eigh_t(self.K.to(torch.float32).div_(scale))
        lam *= scale
        if self.fit_intercept:  # the constant vector is an exact null vector of the centred kernel
            lam[int((Q.sum(0)).abs().argmax())] = 0.0
        self.lam, self.Q = lam, Q
        self.QtY = Q.T @ self.Yc.to(torch.float32)
        self.Q2 = Q * Q

    def loo_rel_error(self, alphas: np.ndarray) -> np.ndarray:
        """Bound on the relative error of :meth:`loo_mse` (0 in float64 mode)."""
        if not self.mixed:
            return np.zeros(len(alphas))
        if self.lam is None:
            self._eigh32()
        lam_max = float(self.lam.max())
        return 1e-4 + 0.1 * float(torch.finfo(torch.float32).eps) * lam_max / np.asarray(alphas)

    def loo_mse(self, alpha: float) -> np.ndarray:
        """Mean squared leave-one-out error per target, shape (k,)."""
        if self.mixed and self.lam is None:
            self._eigh32()
        w = 1.0 / (self.lam + alpha)
        if self.kernel:
            # I - H = alpha · Q diag(1/(lam+alpha)) Qᵀ - 11ᵀ/n (1 is in the null space of Xc Xcᵀ)
            resid = self.Q @ (w[:, None] * self.QtY)
            diag = self.Q2 @ w
            if self.fit_intercept:
                diag -= 1.0 / (self.n * alpha)
        else:
            resid = self.Yc - self.U @ (w[:, None] * self.UtY)
            diag = 1.0 - self.U2 @ w
            if self.fit_intercept:
                diag -= 1.0 / self.n
        resid /= diag[:, None]
        return (resid * resid).mean(0).double().numpy()

    def _cholesky(self, alpha: float) -> torch.Tensor | None:
        """Lower Cholesky factor of ``K + alpha I`` (float64), or None if ill-conditioned."""
        if float(self.K.diagonal().sum()) / alpha >= 1e10:
            return None
        A = self.K.clone()
        A.diagonal().add_(alpha)
        L, info = torch.linalg.cholesky_ex(A)
        return None if int(info) != 0 else L

    def _dual_exact(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """float64 ``(K + alpha I)⁻¹ Yc`` and the Cholesky factor (None: eigen fallback used)."""
        if alpha not in self._dual:
            L = self._cholesky(alpha)
            if L is not None:
                self._dual[alpha] = (torch.cholesky_solve(self.Yc, L), L)
            else:
                if not hasattr(self, "_eig64"):
                    self._eig64 = _eigh_t(self.K.clone())
                lam, Q = self._eig64
                self._dual[alpha] = (Q @ ((Q.T @ self.Yc) / (lam + alpha)[:, None]), None)
        return self._dual[alpha]

    def loo_mse_exact(self, alpha: float) -> np.ndarray:
        """As :meth:`loo_mse`, in float64 (mixed mode: from a Cholesky factorisation)."""
        if not self.mixed:
            return self.loo_mse(alpha)
        dual, L = self._dual_exact(alpha)
        if L is not None:   # diag((LLᵀ)⁻¹) = column norms² of L⁻¹
            Linv = torch.linalg.solve_triangular(L, torch.eye(self.n, dtype=L.dtype), upper=False)
            diag = (Linv * Linv).sum(0)
        else:
            lam, Q = self._eig64
            diag = (Q * Q) @ (1.0 / (lam + alpha))
        if self.fit_intercept:
            diag -= 1.0 / (self.n * alpha)
        resid = dual / diag[:, None]
        return (resid * resid).mean(0).numpy()

    def coef(self, alpha: np.ndarray | float, Xc: np.ndarray) -> np.ndarray:
        """Ridge coefficients, shape (p, k); ``alpha`` scalar or one per target."""
        if self.mixed:
            alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self.Yc.shape[1],))
            dual = torch.empty_like(self.Yc)
            for a in np.unique(alpha):
                cols = torch.from_numpy(np.flatnonzero(alpha == a))
                dual[:, cols] = self._dual_exact(float(a))[0][:, cols]
            return (dual.T @ torch.from_numpy(Xc)).numpy().T          # transposed view of (k, p)
        alpha_t = torch.as_tensor(np.asarray(alpha, dtype=np.float64).reshape(1, -1))
        w = 1.0 / (self.lam[:, None] + alpha_t)                  # (r, 1) or (r, k)
        if self.kernel:
            dual = self.Q @ (w * self.QtY)                       # (n, k)
            return (dual.T @ torch.from_numpy(Xc)).numpy().T     # transposed view of (k, p)
        return (self.V @ (w * self.UtY)).numpy()


def _r2_per_target(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² per column, with sklearn's ``force_finite`` rule for constant targets."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    out = np.ones_like(ss_res)
    nz = ss_tot != 0
    out[nz] = 1 - ss_res[nz] / ss_tot[nz]
    out[~nz & (ss_res != 0)] = 0.0
    return out


def _direct_coef(gram: np.ndarray, Xc: np.ndarray, Yc: np.ndarray, alpha: Any) -> np.ndarray:
    """Coefficients (p, k) by Cholesky solves, one per distinct alpha.

    ``gram`` is ``Xc Xcᵀ`` (kernel form, n <= p) or ``Xcᵀ Xc`` (primal form).
    """
    n, p = Xc.shape
    kernel = n <= p
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (Yc.shape[1],))
    rhs = Yc if kernel else Xc.T @ Yc
    sol = np.empty((gram.shape[0], Yc.shape[1]))
    for a in np.unique(alpha):
        cols = np.flatnonzero(alpha == a)
        A = gram.copy()
        A.flat[::A.shape[0] + 1] += a
        sol[:, cols] = linalg.solve(A, rhs[:, cols], assume_a="pos", overwrite_a=True, check_finite=False)
    return Xc.T @ sol if kernel else sol


def _kfold_scores(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, folds: list,
                  fit_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validation R² (n_alphas, n_folds, k) for K-fold CV, from one Gram matrix (also returned).

    The Gram matrix of the (globally centred) data is computed once; each fold's
    training kernel is re-centred on the fold's own training mean, so the fit of
    every fold sees only its training rows.
    """
    n, p = X.shape
    kernel = n <= p
    out = np.empty((len(alphas), len(folds), Y.shape[1]))
    if kernel:
        G = X @ X.T
    else:
        S = X.T @ X
    for f, (tr, va) in enumerate(folds):
        Ytr, Yva = Y[tr], Y[va]
        y_mean = Ytr.mean(0) if fit_intercept else np.zeros(Y.shape[1])
        Ytrc = Ytr - y_mean
        if kernel:
            Gtt = G[np.ix_(tr, tr)]
            Gvt = G[np.ix_(va, tr)]
            if fit_intercept:
                row = Gtt.mean(1)            # x_t · mu
                tot = row.mean()             # mu · mu
                Ktt = Gtt - row[:, None] - row[None, :] + tot
                Kvt = Gvt - Gvt.mean(1)[:, None] - row[None, :] + tot
            else:
                Ktt, Kvt = Gtt, Gvt
            lam, Q = _eigh(Ktt)
            A = Q.T @ Ytrc
            P = Kvt @ Q
        else:
            Xtr = X[tr]
            mu = Xtr.mean(0) if fit_intercept else np.zeros(p)
            Xva = X[va] - mu
            C = S - X[va].T @ X[va]
            if fit_intercept:
                C -= len(tr) * np.outer(mu, mu)
            lam, V = _eigh(C)
            A = V.T @ ((Xtr - mu).T @ Ytrc)
            P = Xva @ V
        for a, alpha in enumerate(alphas):
            pred = P @ (A / (lam + alpha)[:, None]) + y_mean
            out[a, f] = _r2_per_target(Yva, pred)
    return out, (G if kernel else S)


# ----------------------------------------------------------------------------------------
# the estimator
# ----------------------------------------------------------------------------------------
class RidgeDecoder(HubMixin, _RegressorMixin, _Base):
    """Multi-output ridge regression with the penalty chosen by cross-validation.

    Closed form: the (centred) training data are eigendecomposed once — the
    ``n × n`` kernel ``X Xᵀ`` when there are more features than samples (fMRI
    voxels), the ``p × p`` covariance ``Xᵀ X`` otherwise — and every alpha of
    the grid, every leave-one-out residual and the final coefficients come from
    that one decomposition. Results are float64-accurate (see ``precision``).

    Parameters
    ----------
    alphas : sequence of float
        Candidate penalties, all > 0. Default: 11 values log-spaced from 1 to 1e5.
    cv : int | None
        ``None``: efficient leave-one-out (generalised) cross-validation, scored
        by the mean squared LOO error — the same criterion as
        :class:`sklearn.linear_model.RidgeCV` with its default ``cv=None``.
        An int ``K >= 2``: K-fold cross-validation on the training data only,
        scored by the validation R² averaged over targets and folds — the same
        criterion as ``RidgeCV(cv=K)``. Folds are contiguous blocks (like
        ``KFold(K)``) unless ``random_state`` is given.
    fit_intercept : bool
        Fit an unpenalised intercept (the data are centred on the training mean).
    alpha_per_target : bool
        Choose one alpha per target column instead of one for all.
    random_state : int | numpy.random.Generator | None
        If not None, K-fold folds are drawn from a shuffled order with this seed.
    precision : {"auto", "float64", "mixed"}
        Arithmetic of leave-one-out (``cv=None``) in kernel mode (``n_samples <=
        n_features``); K-fold CV and the covariance mode are always float64.
        ``"float64"``: everything in float64. ``"mixed"``: the float64 kernel is
        eigendecomposed and scanned over all alphas in float32 (about 2× faster
        at NSD sizes); every alpha whose float32 score lies within its error
        bound of the best is then re-scored in float64 from a Cholesky
        factorisation of ``K + alpha I`` (only when two or more are that close),
        and the weights of the chosen alpha come from a float64 Cholesky solve —
        so ``alpha_``, ``coef_`` and predictions are the float64 ones (agreeing
        with scikit-learn to ~1e-10), while ``cv_scores_`` / ``best_score_`` may
        carry ~1e-5 relative error (up to ~1e-8·λmax/alpha on ill-conditioned
        kernels, λmax the largest kernel eigenvalue). ``"auto"`` (default): ``"mixed"`` from 1000
        samples on, else ``"float64"``.

    Attributes
    ----------
    coef_ : ndarray, shape (n_targets, n_features) or (n_features,)
        Weights (1-D when ``y`` was 1-D).
    intercept_ : ndarray, shape (n_targets,) or float
    alpha_ : float or ndarray, shape (n_targets,)
        The chosen penalty (one per target with ``alpha_per_target=True``).
    cv_scores_ : ndarray, shape (n_alphas,) or (n_alphas, n_targets)
        Score of every alpha (higher is better): minus the mean squared LOO
        error (``cv=None``) or the mean validation R² (K-fold).
    best_score_ : float or ndarray
        The score of the chosen alpha(s).
    n_features_in_ : int
    subject_models_ : dict
        After :meth:`fit_trials`: subject → fitted :class:`RidgeDecoder`.

    Notes
    -----
    With ``n`` samples, ``p`` features and ``k`` targets, leave-one-out costs
    one ``min(n, p)``-sized Gram product and eigendecomposition, then
    ``O(min(n,p)·n·k)`` per alpha, plus one ``O(n·p·k)`` product for the final
    weights (scikit-learn's ``RidgeCV`` also pays that last product once per
    alpha). K-fold CV computes one Gram matrix for all folds, eigendecomposes
    each fold's re-centred training block, and refits the chosen alpha by a
    Cholesky solve on the same Gram matrix. The heavy products run in torch
    (CPU); the kernel ``X Xᵀ`` is built from its lower block triangle (about half
    the flops of a full product). Results equal scikit-learn's to ~1e-10.

    ``alpha_per_target=True`` works with both CV modes (``RidgeCV`` allows it
    only with ``cv=None``). Without scikit-learn installed the class still
    works, with a minimal ``get_params`` / ``set_params`` base.

    Examples
    --------
    >>> ridge = RidgeDecoder(cv=None).fit(X_train, Y_train)       # doctest: +SKIP
    >>> Y_pred = ridge.predict(X_test)                             # doctest: +SKIP
    >>> ridge = RidgeDecoder().fit_trials(train_trials, targets)   # doctest: +SKIP
    """

    def __init__(self, alphas: Any = DEFAULT_ALPHAS, cv: int | None = 5, fit_intercept: bool = True,
                 alpha_per_target: bool = False, random_state: Any = None, precision: str = "auto") -> None:
        self.alphas = alphas
        self.cv = cv
        self.fit_intercept = fit_intercept
        self.alpha_per_target = alpha_per_target
        self.random_state = random_state
        self.precision = precision

    # -- sklearn plumbing ---------------------------------------------------------
    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _validate_params(self) -> np.ndarray:
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
            raise ValueError(f"alphas must be a non-empty sequence of positive floats, got {self.alphas!r}")
        cv = self.cv
        if cv is not None and (isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2):
            raise ValueError(f"cv must be None (leave-one-out) or an int >= 2 (K-fold), got {cv!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        return alphas

    def _check_X(self, X: Any, y: Any = None, reset: bool = True, fitting: bool = False):
        if _HAS_SKLEARN:
            if not fitting:
                return _validate_data(self, X, reset=reset, dtype=[np.float64, np.float32])
            return _validate_data(self, X, y, reset=reset, multi_output=True, y_numeric=True,
                                  dtype=np.float64)
        if fitting and y is None:
            raise ValueError("RidgeDecoder requires y to be passed, but the target y is None")
        X = np.asarray(X, dtype=np.float64 if fitting else None)
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D array of shape (n_samples, n_features), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("Input X contains NaN or inf.")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        if not fitting:
            return X
        y = np.asarray(y, dtype=np.float64)
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}; they must match")
        if not np.all(np.isfinite(y)):
            raise ValueError("Input y contains NaN or inf.")
        return X, y

    def _use_mixed(self, n: int, p: int) -> bool:
        """Whether leave-one-out runs in mixed precision (kernel mode only)."""
        if self.precision == "float64" or n > p:
            return False
        return self.precision == "mixed" or n >= _MIXED_MIN_SAMPLES

    def _refine_scores(self, decomp: _Decomposition, alphas: np.ndarray, scores: np.ndarray) -> None:
        """Re-score in float64 the alphas whose float32 LOO score may be the best (in place).

        An alpha is a candidate if its score lies within the combined error bounds
        of the best float32 score (per target with ``alpha_per_target``, else of
        the target mean). With a single candidate the choice is already certain and
        nothing is recomputed; otherwise every candidate is re-scored exactly, so
        the chosen alpha is always the float64 one.
        """
        tol = decomp.loo_rel_error(alphas)[:, None]                  # (n_alphas, 1)
        crit = scores if self.alpha_per_target else scores.mean(1, keepdims=True)
        best = np.argmax(crit, axis=0)
        cols = np.arange(crit.shape[1])
        best_val, best_tol = crit[best, cols], tol[best, 0]
        reach = np.abs(crit) * tol + (np.abs(best_val) * best_tol)[None, :]
        cand = np.flatnonzero((crit >= best_val[None, :] - reach).any(1))
        if len(cand) < 2:
            return
        logger.info("RidgeDecoder: float64 re-check of %d close alphas", len(cand))
        for a in cand:
            scores[a] = -decomp.loo_mse_exact(float(alphas[a]))

    def _reset_fitted(self) -> None:
        for name in ("coef_", "intercept_", "alpha_", "cv_scores_", "best_score_", "subject_models_",
                     "n_features_in_", "feature_names_in_"):
            if hasattr(self, name):
                delattr(self, name)

    # -- fitting -------------------------------------------------------------------
    @verbose
    @fill_doc
    def fit(self, X: Any, y: Any, *, verbose: bool | str | int | None = None) -> RidgeDecoder:
        """Fit on arrays, choosing alpha by cross-validation on ``X, y`` only.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Training responses (e.g. voxels).
        y : array-like, shape (n_samples,) or (n_samples, n_targets)
            Training targets (e.g. stimulus embeddings).
        %(verbose)s

        Returns
        -------
        self : RidgeDecoder
        """
        self._reset_fitted()
        alphas = self._validate_params()
        X, y = self._check_X(X, y, reset=True, fitting=True)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        one_d = y.ndim == 1
        Y = y[:, None] if one_d else y
        n, p = X.shape
        k = Y.shape[1]
        if n < 2:
            raise ValueError(f"RidgeDecoder needs at least 2 samples, got n_samples = {n}")
        if self.cv is not None and n < self.cv:
            raise ValueError(f"cv={self.cv} folds need at least {self.cv} samples, got {n}; "
                             "lower cv or use cv=None (leave-one-out)")
        x_mean = X.mean(0) if self.fit_intercept else np.zeros(p)
        y_mean = Y.mean(0) if self.fit_intercept else np.zeros(k)
        Xc = X - x_mean
        Yc = Y - y_mean
        mode = "kernel (n×n)" if n <= p else "covariance (p×p)"
        logger.info("RidgeDecoder: %d samples × %d features → %d targets, %s, %s, %d alphas",
                    n, p, k, mode, "leave-one-out" if self.cv is None else f"{self.cv}-fold CV",
                    len(alphas))
        if self.cv is None or len(alphas) == 1:
            decomp = _Decomposition(Xc, Yc, self.fit_intercept, mixed=self._use_mixed(n, p))
            if len(alphas) == 1:
                scores = np.zeros((1, k))
            else:
                scores = np.empty((len(alphas), k))
                for a, alpha in enumerate(alphas):
                    scores[a] = -decomp.loo_mse(alpha)
                if decomp.mixed:
                    self._refine_scores(decomp, alphas, scores)
        else:
            rng = check_random_state(self.random_state) if self.random_state is not None else None
            order = rng.permutation(n) if rng is not None else np.arange(n)
            folds = []
            for va in np.array_split(order, self.cv):
                mask = np.ones(n, bool)
                mask[va] = False
                folds.append((np.flatnonzero(mask), np.sort(va)))
            fold_scores, gram = _kfold_scores(Xc, Y, alphas, folds, self.fit_intercept)
            scores = fold_scores.mean(1)
            decomp = None
        if self.alpha_per_target:
            best = np.argmax(scores, axis=0)                   # first best on ties
            alpha = alphas[best]
            self.cv_scores_ = scores
            self.best_score_ = scores[best, np.arange(k)]
        else:
            mean_scores = scores.mean(1)
            best = int(np.argmax(mean_scores))
            alpha = float(alphas[best])
            self.cv_scores_ = mean_scores
            self.best_score_ = float(mean_scores[best])
        if decomp is not None:
            coef = np.ascontiguousarray(decomp.coef(alpha, Xc).T)   # (k, p)
        elif np.trace(gram) / np.min(alpha) < 1e10:
            # K-fold: reuse the Gram matrix, one Cholesky solve per chosen alpha
            coef = np.ascontiguousarray(_direct_coef(gram, Xc, Yc, alpha).T)
        else:  # tiny alpha: an ill-conditioned solve, use the eigendecomposition instead
            coef = np.ascontiguousarray(_Decomposition(Xc, Yc, self.fit_intercept).coef(alpha, Xc).T)
        intercept = y_mean - coef @ x_mean
        if one_d:
            self.coef_ = coef[0]
            self.intercept_ = float(intercept[0])
            self.alpha_ = float(alpha[0]) if np.ndim(alpha) else alpha
        else:
            self.coef_ = coef
            self.intercept_ = intercept
            self.alpha_ = alpha
        if len(alphas) > 1 and not self.alpha_per_target and best in (0, len(alphas) - 1):
            logger.info("RidgeDecoder: chosen alpha %.3g is at the edge of the grid; consider "
                        "extending alphas", alpha)
        logger.info("RidgeDecoder: alpha_ = %s", np.round(self.alpha_, 6) if np.ndim(self.alpha_) else
                    f"{self.alpha_:.4g}")
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predict targets for ``X``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray, shape (n_samples, n_targets) or (n_samples,)
        """
        if not hasattr(self, "coef_") and getattr(self, "subject_models_", None):
            if len(self.subject_models_) == 1:
                return next(iter(self.subject_models_.values())).predict(X)
            raise ValueError(
                f"This RidgeDecoder was fitted on several subjects {list(self.subject_models_)}; "
                "use predict_trials(trials) or subject_models_[subject].predict(X)."
            )
        if _HAS_SKLEARN:
            _check_is_fitted(self, "coef_")
        elif not hasattr(self, "coef_"):
            raise RuntimeError("This RidgeDecoder is not fitted yet; call fit or fit_trials first.")
        X = self._check_X(X, reset=False)
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_

    # -- BrainTrials ---------------------------------------------------------------------
    @verbose
    @fill_doc
    def fit_trials(self, trials: Any, targets: Any, *,
                   verbose: bool | str | int | None = None) -> RidgeDecoder:
        """Fit one ridge per subject from BrainTrials and their stimulus embeddings.

        Parameters
        ----------
        trials : BrainTrials
            Training trials only (``split`` must not be ``"test"``). Features
            beyond the first axis are flattened.
        targets : StimulusEmbeddings
            Embedding of every ``stimulus_id`` in ``trials``.
        %(verbose)s

        Returns
        -------
        self : RidgeDecoder
            With ``subject_models_`` (subject → fitted RidgeDecoder). With a
            single subject, :meth:`predict` on arrays works too.

        Raises
        ------
        DataLeakageError
            If ``trials`` holds test trials.
        """
        check_no_leakage(trials, where="ridge fit")
        self._reset_fitted()
        models = {}
        per_subject = trials.by_subject()
        for subject, sub in ProgressBar(per_subject.items(), total=len(per_subject), desc="ridge",
                                        unit="subject"):
            X = np.asarray(sub.get_data()).reshape(len(sub), -1)
            Y = targets.lookup(sub.events["stimulus_id"])
            logger.info("RidgeDecoder: fitting subject %s", subject)
            models[subject] = type(self)(**self.get_params()).fit(X, Y)
        self.subject_models_ = models
        return self

    def predict_trials(self, trials: Any) -> np.ndarray:
        """Predict targets for every trial, in trial order (ragged subjects allowed).

        Parameters
        ----------
        trials : BrainTrials

        Returns
        -------
        y_pred : ndarray, shape (n_trials, n_targets)
        """
        models = getattr(self, "subject_models_", None)
        out = None
        subj = trials.events["subject"].to_numpy()
        for subject, sub in trials.by_subject().items():
            if models is None:
                model = self
            elif subject in models:
                model = models[subject]
            else:
                raise ValueError(f"No ridge model for subject {subject!r}; fitted subjects are "
                                 f"{list(models)}")
            pred = model.predict(np.asarray(sub.get_data()).reshape(len(sub), -1))
            pred = pred[:, None] if pred.ndim == 1 else pred
            if out is None:
                out = np.empty((len(trials), pred.shape[1]))
            out[subj == subject] = pred
        if out is None:
            raise ValueError("trials is empty")
        return out

    # -- persistence ---------------------------------------------------------------------
    def _tensors(self, prefix: str) -> dict:
        out = {f"{prefix}coef": np.ascontiguousarray(self.coef_, dtype=np.float64),
               f"{prefix}intercept": np.atleast_1d(np.asarray(self.intercept_, dtype=np.float64)),
               f"{prefix}alpha": np.atleast_1d(np.asarray(self.alpha_, dtype=np.float64)),
               f"{prefix}cv_scores": np.ascontiguousarray(self.cv_scores_, dtype=np.float64)}
        return out

    @verbose
    @fill_doc
    def save_pretrained(self, save_directory: str | Path, *, model_card: Any = None,
                        verbose: bool | str | int | None = None) -> Path:
        """Save to a folder: ``model.safetensors`` (weights), ``config.json`` and a ``README.md`` model card.

        The folder is what the Hugging Face Hub takes as a model repo (see :meth:`push_to_hub`).

        Parameters
        ----------
        save_directory : str | Path
            Created if needed; existing files are replaced atomically.
        model_card : mapping | str | False | None
            What the model card says beyond the model itself: a mapping of
            :data:`neurodecode.models.hub.CARD_KEYS` (see :func:`neurodecode.models.hub.render_model_card`),
            the card's full text, ``False`` (no card) or None (a minimal card).
        %(verbose)s

        Returns
        -------
        save_directory : Path
        """
        models = getattr(self, "subject_models_", None)
        if models is None and not hasattr(self, "coef_"):
            raise RuntimeError("This RidgeDecoder is not fitted yet; call fit or fit_trials first.")
        params = self.get_params()
        params["alphas"] = [float(a) for a in np.atleast_1d(params["alphas"])]
        rs = params["random_state"]
        params["random_state"] = rs if rs is None or isinstance(rs, int) else None
        tensors: dict = {}
        entries = []
        items = [(None, self)] if models is None else list(models.items())
        for i, (subject, model) in enumerate(items):
            tensors.update(model._tensors(f"{i}."))
            entries.append({"subject": subject.item() if isinstance(subject, np.generic) else subject,
                            "one_d_target": bool(np.ndim(model.coef_) == 1),
                            "n_features_in": int(model.n_features_in_)})
        config = {"params": params, "models": entries, "per_subject": models is not None}
        folder = write_pretrained(save_directory, tensors, config, class_name=type(self).__name__)
        write_model_card(folder, type(self).__name__, summary=self._card_summary(entries), model_card=model_card)
        return folder

    def _card_summary(self, entries: list[dict]) -> str:
        cv = "efficient leave-one-out" if self.cv is None else f"{self.cv}-fold"
        who = ("one model per subject (subjects " + ", ".join(str(e["subject"]) for e in entries) + ")"
               if getattr(self, "subject_models_", None) is not None else "one model")
        n_in = sorted({e["n_features_in"] for e in entries})
        return (f"A closed-form `RidgeDecoder` (neurodecode): ridge regression from brain responses onto "
                f"stimulus embeddings, its penalty chosen by {cv} cross-validation among "
                f"{np.atleast_1d(self.alphas).size} values; {who}, {', '.join(map(str, n_in))} input features.")

    @classmethod
    @verbose
    @fill_doc
    def from_pretrained(cls, save_directory: str | Path, *, revision: str | None = None,
                        allow_download: bool = False, token: str | bool | None = None,
                        verbose: bool | str | int | None = None) -> RidgeDecoder:
        """Load a RidgeDecoder written by :meth:`save_pretrained` (no pickle).

        Parameters
        ----------
        save_directory : str | Path
            Folder holding ``config.json`` and ``model.safetensors``, or a Hugging Face repo id
            (``"org/name"``) resolved through the local Hugging Face cache.
        %(revision)s
        %(allow_download)s
        %(token)s
        %(verbose)s

        Returns
        -------
        model : RidgeDecoder
        """
        save_directory = resolve_pretrained(save_directory, class_name=cls.__name__, revision=revision,
                                            allow_download=allow_download, token=token)
        config, tensors = read_pretrained(save_directory, class_name=cls.__name__, framework="np")

        def build(i: int, entry: dict) -> RidgeDecoder:
            m = cls(**config["params"])
            coef, intercept = tensors[f"{i}.coef"], tensors[f"{i}.intercept"]
            alpha = tensors[f"{i}.alpha"]
            m.coef_ = coef
            m.intercept_ = float(intercept[0]) if entry["one_d_target"] else intercept
            m.alpha_ = float(alpha[0]) if alpha.size == 1 and not m.alpha_per_target else alpha
            m.cv_scores_ = tensors[f"{i}.cv_scores"]
            m.n_features_in_ = entry["n_features_in"]
            return m

        entries = config["models"]
        if not config["per_subject"]:
            model = build(0, entries[0])
        else:
            model = cls(**config["params"])
            model.subject_models_ = {e["subject"]: build(i, e) for i, e in enumerate(entries)}
        logger.info("Loaded RidgeDecoder from %s", save_directory)
        return model
